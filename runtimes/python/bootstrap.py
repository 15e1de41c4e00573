"""Aloft's Python runtime bootstrap.

Imports the function's handler and serves invocations over the AWS Lambda
Runtime API, behaving like AWS's managed Python runtime (handler resolution,
context object, error documents, log format). Python 3.11 standard library
only.

Environment: AWS_LAMBDA_RUNTIME_API (host:port), _HANDLER ("pkg.module.fn"),
LAMBDA_TASK_ROOT (the code directory) and the AWS_LAMBDA_* function facts.

Pool mode (ALOFT_POOL=1, no function yet): the bootstrap imports what does not
depend on the function, then waits on Aloft's GET /runtime/aloft/specialize
for the function's environment, applies it to os.environ and goes on as if
started with it. The task root joins sys.path only then, and the import
system's directory caches are dropped, so the code linked into it meanwhile
is found.

The Runtime API is spoken over one persistent socket with a minimal HTTP/1.1
client rather than http.client, whose import (email.parser and friends) would
add about 15 ms to every cold start; the server is always Aloft's runtimeapi
(Go net/http), so Content-Length and chunked bodies are all it must read.

Differences from AWS: a handler missing on its module is reported as an init
error (AWS reports it on each invocation); stdout is line-buffered (and flushed
after each invocation) instead of unbuffered.
"""

import importlib
import json
import logging
import os
import socket
import sys
import time
import traceback

API_PREFIX = "/2018-06-01/runtime"
_BOOTSTRAP = os.path.abspath(__file__)

# Request id of the invocation in progress ("" during init), for the log.
_request_id = ""


class FaultException(Exception):
    """A runtime fault with an AWS error type (Runtime.*)."""

    IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
    BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
    MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
    USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
    MARSHAL_ERROR = "Runtime.MarshalError"
    UNMARSHAL_ERROR = "Runtime.UnmarshalError"

    def __init__(self, exception_type, msg, trace=None):
        super().__init__(msg)
        self.exception_type = exception_type
        self.msg = msg
        self.trace = trace


# ---- Runtime API client ----


class RuntimeClient:
    """A keep-alive HTTP/1.1 client for the Runtime API."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.addr = (host or "127.0.0.1", int(port or 80))
        self.host_header = address.encode("latin-1")
        self.sock = None
        self.rfile = None

    def _connect(self):
        self.close()
        self.sock = socket.create_connection(self.addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def close(self):
        if self.rfile is not None:
            self.rfile.close()
            self.rfile = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method, path, body=b"", headers=()):
        """Sends a request and returns (status, headers dict, body bytes).

        A request on a reused connection that the server closed meanwhile is
        retried once on a fresh connection.
        """
        fresh = self.sock is None
        if fresh:
            self._connect()
        try:
            return self._roundtrip(method, path, body, headers)
        except (ConnectionError, EOFError) as e:
            self.close()
            if fresh:
                raise ConnectionError("runtime api: %s" % e) from e
            self._connect()
            return self._roundtrip(method, path, body, headers)

    def _roundtrip(self, method, path, body, headers):
        lines = [
            b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), path.encode(), self.host_header)
        ]
        for k, v in headers:
            lines.append(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1", "replace")))
        if method != "GET":
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        lines.append(body)
        self.sock.sendall(b"".join(lines))

        rf = self.rfile
        status_line = rf.readline(65537)
        if not status_line:
            raise EOFError("connection closed")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnectionError("bad status line %r" % status_line)
        status = int(parts[1])
        hdrs = {}
        while True:
            line = rf.readline(65537)
            if not line:
                raise EOFError("connection closed in headers")
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            data = rf.read(n) if n else b""
            if len(data) != n:
                raise EOFError("connection closed in body")
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = rf.readline(65537)
                if not size_line:
                    raise EOFError("connection closed in chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while rf.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(rf.read(size))
                rf.readline(65537)
            data = b"".join(chunks)
        else:  # body runs to the end of the connection
            data = rf.read()
            self.close()
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, data

    def next(self):
        status, hdrs, body = self.request("GET", API_PREFIX + "/invocation/next")
        if status != 200:
            raise ConnectionError("GET invocation/next: status %d: %r" % (status, body))
        return hdrs, body

    def specialize(self):
        """Waits for the function this pooled instance is given; returns its environment."""
        status, _, body = self.request("GET", API_PREFIX + "/aloft/specialize")
        if status != 200:
            raise ConnectionError("GET aloft/specialize: status %d: %r" % (status, body))
        return json.loads(body).get("env") or {}

    def post(self, path, body, error_type=None):
        headers = [("Content-Type", "application/json")]
        if error_type is not None:
            headers.append(("Lambda-Runtime-Function-Error-Type", error_type))
        status, _, resp = self.request("POST", API_PREFIX + path, body, headers)
        if status != 202:
            sys.stderr.write("aloft runtime: POST %s: status %d: %s\n" % (path, status, resp.decode("utf-8", "replace")))


# ---- errors ----


def make_error(message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id or "",
        "stackTrace": stack_trace or [],
    }


def build_fault_result(exc_info, request_id):
    """Renders a user exception as AWS does: frames of the bootstrap are left out."""
    etype, value, tb = exc_info
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    i = 0
    while i < len(frames) and frames[i][0] == _BOOTSTRAP:
        i += 1
    frames = frames[i:]
    return make_error(str(value), etype.__name__, traceback.format_list(frames), request_id)


def log_error(doc):
    """Logs an error document as AWS does: one record, lines joined by \\r."""
    desc = "[ERROR]"
    if doc.get("errorType"):
        desc += " " + doc["errorType"]
    if doc.get("errorMessage"):
        if doc.get("errorType"):
            desc += ":"
        desc += " " + doc["errorMessage"]
    lines = [desc]
    stack = doc.get("stackTrace")
    if stack is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack:
            lines.extend(element.splitlines() if element else [""])
    sys.stdout.write("\r".join(lines).replace("\n", "\r") + "\n")


# ---- JSON ----


def _default(o):
    import decimal  # only when a value json cannot encode shows up

    if isinstance(o, decimal.Decimal):
        if o.is_nan():
            return float("nan")
        return int(o) if o == o.to_integral_value() else float(o)
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


_encoder = json.JSONEncoder(default=_default, ensure_ascii=False, allow_nan=True)


def marshal(result):
    if isinstance(result, (bytes, bytearray)):
        return bytes(result)
    try:
        return _encoder.encode(result).encode("utf-8")
    except Exception as e:
        raise FaultException(FaultException.MARSHAL_ERROR, "Unable to marshal response: %s" % e) from None


def unmarshal(body):
    if not body:
        return {}
    try:
        return json.loads(body)
    except Exception as e:
        raise FaultException(FaultException.UNMARSHAL_ERROR, "Unable to unmarshal input: %s" % e) from None


# ---- context ----


class Client:
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]


class ClientContext:
    __slots__ = ["custom", "env", "client"]


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]


def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, d.get(field))
    return obj


class LambdaContext:
    """The handler's context, with the attributes of AWS's."""

    def __init__(self, request_id, client_context, cognito_identity, deadline_ms, invoked_function_arn):
        env = os.environ
        self.aws_request_id = request_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        remaining = self._deadline_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,function_name=%s,"
            "memory_limit_in_mb=%s,function_version=%s,invoked_function_arn=%s,client_context=%s,identity=%s])"
            % (
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
                self.client_context,
                self.identity,
            )
        )


def _json_header(value):
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


# ---- logging ----


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _request_id
        return True


class _LambdaHandler(logging.Handler):
    """Writes records to stdout in AWS's format, one record per line."""

    def emit(self, record):
        try:
            msg = self.format(record).replace("\n", "\r")
            sys.stdout.write(msg + "\n")
        except Exception:
            self.handleError(record)


def setup_logging():
    handler = _LambdaHandler()
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        root.setLevel(level.upper())


# ---- handler ----


def get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(FaultException.MALFORMED_HANDLER_NAME, "Bad handler '%s': %s" % (handler, e)) from None
    if not modname or not fname:
        raise FaultException(FaultException.MALFORMED_HANDLER_NAME, "Bad handler '%s'" % handler)
    if modname.split(".")[0] in sys.builtin_module_names:
        raise FaultException(
            FaultException.BUILT_IN_MODULE_CONFLICT, "Cannot use built-in module %s as a handler module" % modname
        )
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultException(
            FaultException.IMPORT_MODULE_ERROR, "Unable to import module '%s': %s" % (modname, e)
        ) from None
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(
            FaultException.USER_CODE_SYNTAX_ERROR, "Syntax error in module '%s': %s" % (modname, e), trace
        ) from None
    fn = getattr(module, fname, None)
    if fn is None:
        raise FaultException(
            FaultException.HANDLER_NOT_FOUND, "Handler '%s' missing on module '%s'" % (fname, modname)
        )
    if not callable(fn):
        raise FaultException(
            FaultException.HANDLER_NOT_FOUND, "Handler '%s' on module '%s' is not callable" % (fname, modname)
        )
    return fn


def handle_invocation(client, fn, hdrs, body):
    global _request_id
    request_id = hdrs.get("lambda-runtime-aws-request-id", "")
    _request_id = request_id
    trace_id = hdrs.get("lambda-runtime-trace-id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)

    error = None
    try:
        try:
            deadline_ms = int(hdrs.get("lambda-runtime-deadline-ms", "0"))
        except ValueError:
            deadline_ms = 0
        context = LambdaContext(
            request_id,
            _json_header(hdrs.get("lambda-runtime-client-context")),
            _json_header(hdrs.get("lambda-runtime-cognito-identity")),
            deadline_ms,
            hdrs.get("lambda-runtime-invoked-function-arn"),
        )
        event = unmarshal(body)
        payload = marshal(fn(event, context))
    except FaultException as e:
        error = make_error(e.msg, e.exception_type, e.trace, request_id)
    except Exception:
        error = build_fault_result(sys.exc_info(), request_id)

    if error is not None:
        log_error(error)
    _flush()
    if error is None:
        client.post("/invocation/%s/response" % request_id, payload)
    else:
        client.post(
            "/invocation/%s/error" % request_id,
            json.dumps(error, ensure_ascii=False).encode("utf-8"),
            error["errorType"],
        )
    _request_id = ""


def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass


def specialize(client):
    """Applies the environment of the function this pooled instance is given."""
    env = client.specialize()
    tz = os.environ.get("TZ")
    os.environ.pop("ALOFT_POOL", None)
    os.environ.update(env)
    if os.environ.get("TZ") != tz:
        time.tzset()
    importlib.invalidate_caches()


def main():
    for f in (sys.stdout, sys.stderr):
        try:
            f.reconfigure(line_buffering=True)
        except Exception:
            pass
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    if os.environ.get("ALOFT_POOL") == "1":
        specialize(client)

    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # The script's own directory is sys.path[0]; the task root replaces it so
    # user modules cannot be shadowed by (or shadow) the bootstrap.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(_BOOTSTRAP):
        sys.path.pop(0)
    sys.path.insert(0, task_root)
    os.chdir(task_root)

    error = None
    try:
        setup_logging()
        fn = get_handler(os.environ.get("_HANDLER", ""))
    except FaultException as e:
        error = make_error(e.msg, e.exception_type, e.trace)
    except Exception:
        error = build_fault_result(sys.exc_info(), None)
    if error is not None:
        log_error(error)
        _flush()
        client.post("/init/error", json.dumps(error, ensure_ascii=False).encode("utf-8"), error["errorType"])
        sys.exit(1)

    while True:
        hdrs, body = client.next()
        handle_invocation(client, fn, hdrs, body)


if __name__ == "__main__":
    main()
