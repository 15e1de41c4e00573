// Aloft's Node.js runtime bootstrap: loads the function's handler and serves
// invocations over the AWS Lambda Runtime API, behaving like AWS's managed
// Node.js runtime (handler resolution, context, error shapes, console log
// format, callback semantics). Plain Node 20, no dependencies.
//
// Environment: AWS_LAMBDA_RUNTIME_API (host:port), _HANDLER ("dir/file.export"),
// LAMBDA_TASK_ROOT (the code directory) and the AWS_LAMBDA_* function facts.
//
// Pool mode (ALOFT_POOL=1, no function yet): the bootstrap loads everything
// that does not depend on the function, then waits on Aloft's
// GET /runtime/aloft/specialize for the function's environment, applies it
// to process.env and goes on as if started with it.
//
// Callback handlers: as on AWS, callback(null, result) sends the response
// once the event loop is empty unless context.callbackWaitsForEmptyEventLoop
// is false; callback(err) sends the error at once. A non-async handler that
// neither calls the callback nor returns a promise answers null once the
// event loop is empty, as on AWS, except that a handler declaring fewer than
// three parameters and returning a value other than undefined answers that
// value at once (AWS would answer null).

import fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import util from 'node:util';

const API_PREFIX = '/2018-06-01/runtime';
const EXIT_UNCAUGHT = 129; // what AWS's runtime exits with on an uncaught exception
const EXIT_UNHANDLED_REJECTION = 128;

const env = process.env;
const apiHostHeader = env.AWS_LAMBDA_RUNTIME_API || '';
const [apiHost, apiPort] = splitHostPort(apiHostHeader);

// Request id of the invocation in progress; undefined during init and
// between invocations (AWS prints "undefined" then, too).
let currentRequestId;
// Set while an invocation runs: finishes it with an error (uncaught errors).
let failCurrent = null;
// Set during init: reports an init error (uncaught errors).
let initializing = true;
// Run when the event loop empties during an invocation.
let beforeExitHook = null;
// Set once an uncaught error ends the process: no further invocations.
let exiting = false;
// The last answer posted (or being posted).
let lastPost = Promise.resolve();

// ---- Runtime API client ----

function splitHostPort(hostport) {
  const i = hostport.lastIndexOf(':');
  if (i < 0) return [hostport, 80];
  let host = hostport.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return [host, Number(hostport.slice(i + 1))];
}

// Conn is a minimal keep-alive HTTP/1.1 client for the Runtime API, about
// twice as fast per warm invocation as node:http (whose stream layers
// dominate a loopback round trip). The server is always Aloft's runtimeapi
// (Go net/http): responses carry Content-Length or are chunked. Requests on
// one Conn are sequential. The socket is unref'ed while idle so that it does
// not keep the event loop alive (callback semantics rely on 'beforeExit').
class Conn {
  constructor() {
    this.sock = null;
    this.buf = EMPTY; // unparsed input, joined
    this.parts = []; // unparsed input, as received
    this.have = 0; // bytes in parts
    this.need = 0; // bytes the response in parts needs, when known
    this.pending = null; // {resolve, reject, retry}
    this.used = false; // a response was read on this socket
  }

  connect() {
    const sock = net.connect({ host: apiHost, port: apiPort, noDelay: true });
    sock.on('data', (d) => this.onData(sock, d));
    sock.on('error', (err) => this.onClose(sock, err));
    sock.on('close', () => this.onClose(sock, null));
    this.sock = sock;
    this.buf = EMPTY;
    this.parts = [];
    this.have = this.need = 0;
    this.used = false;
  }

  request(method, urlPath, body = '', headers = '') {
    if (this.pending !== null) return new Conn().request(method, urlPath, body, headers); // busy: rare
    return new Promise((resolve, reject) => this.send(method, urlPath, body, headers, resolve, reject, true));
  }

  send(method, urlPath, body, headers, resolve, reject, retry) {
    if (this.sock === null) this.connect();
    const reused = this.used;
    this.pending = {
      resolve,
      reject,
      // Retried once on a fresh connection when a reused one turns out to
      // be closed before any of the response arrived.
      retry: retry && reused ? () => this.send(method, urlPath, body, headers, resolve, reject, false) : null,
    };
    const len = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    const head =
      `${method} ${urlPath} HTTP/1.1\r\nHost: ${apiHostHeader}\r\n${headers}` +
      (method === 'GET' ? '\r\n' : `Content-Length: ${len}\r\n\r\n`);
    this.sock.ref();
    if (typeof body === 'string') this.sock.write(head + body);
    else this.sock.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  }

  onClose(sock, err) {
    if (sock !== this.sock) return;
    sock.destroy();
    this.sock = null;
    const p = this.pending;
    if (p === null) return;
    this.pending = null;
    if (p.retry !== null && this.have === 0) {
      p.retry();
      return;
    }
    p.reject(err || Object.assign(new Error('runtime api closed the connection'), { code: 'ECONNRESET' }));
  }

  onData(sock, data) {
    if (sock !== this.sock) return;
    // Large bodies arrive in many pieces: gather them and join once the
    // response can be complete.
    this.parts.push(data);
    this.have += data.length;
    if (this.have < this.need) return;
    this.buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.have);
    this.parts = [this.buf];
    if (this.pending === null) return;
    let res;
    try {
      res = parseResponse(this.buf);
    } catch (err) {
      const p = this.pending;
      this.pending = null;
      sock.destroy();
      this.sock = null;
      p.reject(err);
      return;
    }
    if (typeof res === 'number') {
      this.need = res; // incomplete: bytes needed
      return;
    }
    const p = this.pending;
    this.pending = null;
    this.buf = this.buf.subarray(res.size);
    this.parts = this.buf.length === 0 ? [] : [this.buf];
    this.have = this.buf.length;
    this.need = 0;
    this.used = true;
    if (res.headers.connection === 'close') {
      sock.destroy();
      this.sock = null;
    } else {
      sock.unref();
    }
    p.resolve(res);
  }
}

const EMPTY = Buffer.alloc(0);
const CRLF2 = Buffer.from('\r\n\r\n');

// parseResponse parses one HTTP/1.1 response at the start of buf. While buf
// holds only part of it, it returns the number of bytes the whole needs, as
// far as known (buf.length + 1 when unknown).
function parseResponse(buf) {
  const end = buf.indexOf(CRLF2);
  if (end < 0) {
    if (buf.length > 1 << 20) throw new Error('runtime api: response head too large');
    return buf.length + 1;
  }
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  if (!m) throw new Error(`runtime api: bad status line ${JSON.stringify(lines[0])}`);
  const headers = {};
  for (let i = 1; i < lines.length; i++) {
    const c = lines[i].indexOf(':');
    if (c > 0) headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
  }
  const start = end + 4;
  const cl = headers['content-length'];
  if (cl !== undefined) {
    const n = Number(cl);
    if (buf.length < start + n) return start + n;
    return { status: Number(m[1]), headers, body: buf.subarray(start, start + n), size: start + n };
  }
  if ((headers['transfer-encoding'] || '').toLowerCase() === 'chunked') {
    const chunks = [];
    let pos = start;
    for (;;) {
      const eol = buf.indexOf('\r\n', pos);
      if (eol < 0) return buf.length + 1;
      const size = parseInt(buf.toString('latin1', pos, eol), 16);
      if (Number.isNaN(size)) throw new Error('runtime api: bad chunk size');
      if (size === 0) {
        const tail = buf.indexOf(CRLF2, eol - 2 < pos ? pos : eol - 2);
        if (tail < 0) return buf.length + 1;
        return { status: Number(m[1]), headers, body: Buffer.concat(chunks), size: tail + 4 };
      }
      if (buf.length < eol + 2 + size + 2) return eol + 2 + size + 2;
      chunks.push(buf.subarray(eol + 2, eol + 2 + size));
      pos = eol + 2 + size + 2;
    }
  }
  // Neither: an empty body (Go sends 1xx/204/304 so; nothing else here).
  return { status: Number(m[1]), headers, body: EMPTY, size: start };
}

const conn = new Conn();

function request(method, urlPath, body, headers) {
  return conn.request(method, urlPath, body, headers);
}

async function post(urlPath, body, errorType) {
  let headers = 'Content-Type: application/json\r\n';
  if (errorType !== undefined) {
    headers += `Lambda-Runtime-Function-Error-Type: ${String(errorType).replace(/[^\x20-\x7e]/g, '?')}\r\n`;
  }
  const res = await request('POST', urlPath, body, headers);
  if (res.status !== 202) {
    process.stderr.write(
      `aloft runtime: POST ${urlPath}: status ${res.status}: ${res.body.toString()}\n`,
    );
  }
  return res;
}

// ---- error shapes (as AWS's Node runtime) ----

function isErrorLike(e) {
  return (
    e !== null &&
    typeof e === 'object' &&
    typeof e.name === 'string' &&
    typeof e.message === 'string' &&
    typeof e.stack === 'string'
  );
}

// toRapidResponse renders a thrown value as the error document AWS's Node
// runtime posts, {errorType, errorMessage, trace}, plus the same lines as
// stackTrace, the field of the Lambda error format every runtime shares.
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      const trace = typeof error.stack === 'string' ? error.stack.split('\n') : [];
      return {
        errorType: String(error.name),
        errorMessage: String(error.message),
        trace,
        stackTrace: trace,
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [], stackTrace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

// toFormatted renders an error for the log the way AWS does ("Invoke Error").
function toFormatted(error) {
  try {
    const doc = toRapidResponse(error);
    return '\t' + JSON.stringify({ errorType: doc.errorType, errorMessage: doc.errorMessage, stack: doc.trace });
  } catch {
    return '\t' + String(error);
  }
}

function namedError(name, message, cause) {
  const e = new Error(message);
  const header = `Error: ${message}`;
  e.name = name;
  if (cause !== undefined) e.cause = cause;
  // The stack was rendered with the old name; give it the new one.
  if (typeof e.stack === 'string' && e.stack.startsWith(header)) {
    e.stack = `${name}: ${message}` + e.stack.slice(header.length);
  }
  return e;
}

// ---- console (AWS's text log format) ----

function patchConsole() {
  const make = (level) =>
    function (...args) {
      const line = `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${util.format(...args)}`;
      // One record per line: embedded newlines become \r, as on AWS.
      process.stdout.write(line.replace(/\n/g, '\r') + '\n');
    };
  console.log = make('INFO');
  console.info = make('INFO');
  console.warn = make('WARN');
  console.error = make('ERROR');
  console.debug = make('DEBUG');
  console.trace = make('TRACE');
  console.fatal = make('FATAL');
}

// ---- handler loading (as AWS's UserFunction.load) ----

function hasTypeModule(dir) {
  for (;;) {
    if (dir.endsWith(path.sep + 'node_modules')) return false;
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8'))?.type === 'module';
      } catch (e) {
        console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
        return false;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return false;
    dir = parent;
  }
}

async function loadModule(taskRoot, moduleRoot, moduleName) {
  const base = path.resolve(taskRoot, moduleRoot, moduleName);
  const req = createRequire(path.join(taskRoot, moduleRoot, 'index.js'));
  const isFile = (p) => {
    try {
      return fs.statSync(p).isFile();
    } catch {
      return false;
    }
  };
  const importFile = async (p) => await import(pathToFileURL(p).href);
  if (isFile(base)) return req(base); // extensionless: CommonJS
  if (isFile(base + '.js')) {
    if (hasTypeModule(path.dirname(base))) return importFile(base + '.js');
    return req(base + '.js');
  }
  if (isFile(base + '.mjs')) return importFile(base + '.mjs');
  if (isFile(base + '.cjs')) return req(base + '.cjs');
  // A directory with an index, or a package in node_modules, as AWS does.
  const resolved = createRequire(import.meta.url).resolve(moduleName, {
    paths: [path.resolve(taskRoot, moduleRoot), taskRoot],
  });
  return req(resolved);
}

async function loadHandler(taskRoot, fullHandler) {
  if (fullHandler.includes('..')) {
    throw namedError(
      'Runtime.MalformedHandlerName',
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const handlerString = path.basename(fullHandler);
  const moduleRoot = fullHandler.slice(0, fullHandler.length - handlerString.length);
  const m = /^([^.]*)\.(.*)$/.exec(handlerString);
  if (!m || m[1] === '' || m[2] === '') throw namedError('Runtime.MalformedHandlerName', 'Bad handler');
  const [, moduleName, handlerPath] = m;

  let app;
  try {
    app = await loadModule(taskRoot, moduleRoot, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError) throw namedError('Runtime.UserCodeSyntaxError', String(e), e);
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND')) {
      throw namedError('Runtime.ImportModuleError', String(e), e);
    }
    throw e;
  }
  const fn = handlerPath.split('.').reduce((o, k) => (o == null ? undefined : o[k]), app);
  if (fn === undefined || fn === null) {
    throw namedError('Runtime.HandlerNotFound', `${fullHandler} is undefined or not exported`);
  }
  if (typeof fn !== 'function') {
    throw namedError('Runtime.HandlerNotFound', `${fullHandler} is not a function`);
  }
  return fn;
}

// ---- invocations ----

function parseJSONHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (e) {
    throw new Error(`Cannot parse ${name} as json: ${e}`);
  }
}

function serialize(result) {
  try {
    return JSON.stringify(result === undefined ? null : result) ?? 'null';
  } catch (e) {
    return e;
  }
}

// invoke runs the handler for one invocation and resolves once its answer
// has been posted.
function invoke(handler, headers, body) {
  return new Promise((resolveDone, rejectDone) => {
    const id = headers['lambda-runtime-aws-request-id'];
    const deadline = Number(headers['lambda-runtime-deadline-ms']);
    const traceId = headers['lambda-runtime-trace-id'];
    currentRequestId = id;
    if (traceId) env._X_AMZN_TRACE_ID = traceId;
    else delete env._X_AMZN_TRACE_ID;

    let done = false;
    const finish = (isError, value) => {
      if (done) {
        console.error(
          'Invocation has already been reported as done. Cannot call complete more than once per invocation.',
        );
        return Promise.resolve();
      }
      done = true;
      beforeExitHook = null;
      failCurrent = null;
      let sent;
      if (!isError) {
        const out = serialize(value);
        if (typeof out === 'string') {
          sent = post(`${API_PREFIX}/invocation/${id}/response`, out);
        } else {
          isError = true;
          value = namedError('Runtime.MarshalError', `Unable to stringify response body: ${out.message}`);
          value.stack = undefined; // a runtime fault: no user frames to show
        }
      }
      if (isError) {
        console.error('Invoke Error', toFormatted(value));
        const doc = toRapidResponse(value);
        sent = post(`${API_PREFIX}/invocation/${id}/error`, JSON.stringify(doc), doc.errorType);
      }
      lastPost = sent;
      sent = sent.then(() => {
        currentRequestId = undefined;
        if (!exiting) resolveDone();
      });
      sent.catch(rejectDone);
      return sent;
    };
    failCurrent = (err) => finish(true, err);

    let waitForEmptyEventLoop = true;
    const callback = (err, result) => {
      if (err !== undefined && err !== null) {
        finish(true, err);
      } else if (!waitForEmptyEventLoop) {
        finish(false, result);
      } else {
        beforeExitHook = () => finish(false, result);
      }
    };
    const succeed = (result) => finish(false, result);
    const fail = (err) => finish(true, err === undefined || err === null ? 'handled' : err);
    const context = {
      get callbackWaitsForEmptyEventLoop() {
        return waitForEmptyEventLoop;
      },
      set callbackWaitsForEmptyEventLoop(v) {
        waitForEmptyEventLoop = v;
      },
      succeed,
      fail,
      done: (err, result) => (err !== undefined && err !== null ? fail(err) : succeed(result)),
      functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
      functionName: env.AWS_LAMBDA_FUNCTION_NAME,
      memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
      logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
      logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
      clientContext: undefined,
      identity: undefined,
      invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
      awsRequestId: id,
      getRemainingTimeInMillis: () => deadline - Date.now(),
    };
    // With neither a callback nor a settled promise, answer null once the
    // event loop is empty, as AWS does.
    beforeExitHook = () => finish(false, null);

    try {
      context.clientContext = parseJSONHeader(headers['lambda-runtime-client-context'], 'ClientContext');
      context.identity = parseJSONHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity');
      const event = body.length === 0 ? {} : JSON.parse(body.toString());
      const result = handler(event, context, callback);
      if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
        result.then(succeed, fail);
      } else if (result !== undefined && handler.length < 3) {
        succeed(result);
      }
    } catch (err) {
      finish(true, err);
    }
  });
}

// ---- uncaught errors ----

function onFatal(err, exitCode) {
  const label = err instanceof Error && err.name.startsWith('Runtime.') ? err.name : 'Uncaught Exception';
  console.error(label, toFormatted(err));
  exiting = true;
  const exit = () => process.exit(exitCode);
  if (failCurrent) {
    failCurrent(err).then(exit, exit);
  } else if (initializing) {
    reportInitError(err).then(exit, exit);
  } else {
    lastPost.then(exit, exit); // let an answer in flight arrive
  }
}

async function reportInitError(err) {
  initializing = false;
  console.error('Init Error', toFormatted(err));
  const doc = toRapidResponse(err);
  await post(`${API_PREFIX}/init/error`, JSON.stringify(doc), doc.errorType);
}

// ---- pool mode ----

// specialize waits until the worker assigns this pre-started instance a
// function and applies the function's environment.
async function specialize() {
  // Warm what loading a handler uses: the CommonJS loader and JSON parsing.
  createRequire(import.meta.url)('node:events');
  const res = await request('GET', `${API_PREFIX}/aloft/specialize`);
  if (res.status !== 200) {
    throw new Error(`GET aloft/specialize: status ${res.status}: ${res.body.toString()}`);
  }
  const { env: fnEnv } = JSON.parse(res.body.toString());
  delete env.ALOFT_POOL;
  for (const [k, v] of Object.entries(fnEnv || {})) env[k] = v;
}

// ---- main ----

async function main() {
  patchConsole();
  process.on('uncaughtException', (err) => onFatal(err, EXIT_UNCAUGHT));
  process.on('unhandledRejection', (reason) => {
    let msg;
    try {
      msg = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
    } catch {
      msg = 'unhandled promise rejection';
    }
    onFatal(namedError('Runtime.UnhandledPromiseRejection', msg, reason), EXIT_UNHANDLED_REJECTION);
  });
  process.on('beforeExit', () => {
    const hook = beforeExitHook;
    beforeExitHook = null;
    if (hook) hook();
  });

  if (env.ALOFT_POOL === '1') await specialize();

  const taskRoot = env.LAMBDA_TASK_ROOT || process.cwd();
  process.chdir(taskRoot);
  // Like AWS (NODE_PATH includes /var/task): bare specifiers also resolve
  // from the task root.
  env.NODE_PATH = env.NODE_PATH ? `${env.NODE_PATH}${path.delimiter}${taskRoot}` : taskRoot;
  if (typeof Module._initPaths === 'function') Module._initPaths();

  let handler;
  try {
    handler = await loadHandler(taskRoot, env._HANDLER || '');
  } catch (err) {
    await reportInitError(err);
    process.exit(EXIT_UNCAUGHT);
  }
  initializing = false;

  for (;;) {
    const res = await request('GET', `${API_PREFIX}/invocation/next`);
    if (res.status !== 200) {
      throw new Error(`GET invocation/next: status ${res.status}: ${res.body.toString()}`);
    }
    await invoke(handler, res.headers, res.body);
  }
}

main().catch((err) => {
  process.stderr.write(`aloft runtime: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
