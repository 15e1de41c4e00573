// Aloft's Node.js runtime bootstrap: loads the function's handler and serves
// invocations over the AWS Lambda Runtime API, behaving like AWS's managed
// Node.js runtime (handler resolution, context, error shapes, console log
// format, callback semantics). Plain Node 20, no dependencies.
//
// Environment: AWS_LAMBDA_RUNTIME_API (host:port), _HANDLER ("dir/file.export"),
// LAMBDA_TASK_ROOT (the code directory) and the AWS_LAMBDA_* function facts.
//
// Callback handlers: as on AWS, callback(null, result) sends the response
// once the event loop is empty unless context.callbackWaitsForEmptyEventLoop
// is false; callback(err) sends the error at once. A non-async handler that
// neither calls the callback nor returns a promise answers null once the
// event loop is empty, as on AWS, except that a handler declaring fewer than
// three parameters and returning a value other than undefined answers that
// value at once (AWS would answer null).

import fs from 'node:fs';
import http from 'node:http';
import Module, { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import util from 'node:util';

const API_PREFIX = '/2018-06-01/runtime';
const EXIT_UNCAUGHT = 129; // what AWS's runtime exits with on an uncaught exception
const EXIT_UNHANDLED_REJECTION = 128;

const env = process.env;
const [apiHost, apiPort] = splitHostPort(env.AWS_LAMBDA_RUNTIME_API || '');
// One keep-alive connection serves every request; Node unrefs it while it is
// idle, so it does not keep the event loop alive (callback semantics rely on
// 'beforeExit').
const agent = new http.Agent({ keepAlive: true });

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

// ---- Runtime API client ----

function splitHostPort(hostport) {
  const i = hostport.lastIndexOf(':');
  if (i < 0) return [hostport, 80];
  let host = hostport.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return [host, Number(hostport.slice(i + 1))];
}

// request sends one request to the Runtime API and resolves with
// {status, headers, body}. A request on a reused keep-alive connection that
// the server closed meanwhile is retried once on a fresh one.
function request(method, urlPath, body, headers, retry = true) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: apiHost, port: apiPort, method, path: urlPath, agent, headers },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode,
            headers: res.headers,
            body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', (err) => {
      if (retry && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        resolve(request(method, urlPath, body, headers, false));
        return;
      }
      reject(err);
    });
    req.end(body);
  });
}

async function post(urlPath, body, errorType) {
  const headers = {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
  };
  if (errorType !== undefined) headers['Lambda-Runtime-Function-Error-Type'] = errorType;
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
// runtime posts: {errorType, errorMessage, trace}.
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      return {
        errorType: String(error.name),
        errorMessage: String(error.message),
        trace: typeof error.stack === 'string' ? error.stack.split('\n') : [],
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
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
  e.name = name;
  if (cause !== undefined) e.cause = cause;
  // Recompute the stack header with the new name.
  if (typeof e.stack === 'string') {
    const nl = e.stack.indexOf('\n');
    e.stack = `${name}: ${message}` + (nl >= 0 ? e.stack.slice(nl) : '');
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
        }
      }
      if (isError) {
        console.error('Invoke Error', toFormatted(value));
        const doc = toRapidResponse(value);
        sent = post(`${API_PREFIX}/invocation/${id}/error`, JSON.stringify(doc), doc.errorType);
      }
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
    exit();
  }
}

async function reportInitError(err) {
  initializing = false;
  console.error('Init Error', toFormatted(err));
  const doc = toRapidResponse(err);
  await post(`${API_PREFIX}/init/error`, JSON.stringify(doc), doc.errorType);
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
