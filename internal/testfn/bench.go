package testfn

// The Node and Python functions `aloft bench` deploys, in the spirit of
// ./benchecho: they return the event unchanged; "sleep_ms" sleeps first and
// "instance": true answers {"instance": <log stream name>}.
const (
	// BenchNode is index.js (handler index.handler).
	BenchNode = `exports.handler = async (event) => {
  if (event && event.sleep_ms) await new Promise(r => setTimeout(r, event.sleep_ms));
  if (event && event.instance) return { instance: process.env.AWS_LAMBDA_LOG_STREAM_NAME };
  return event;
};
`
	// BenchPython is main.py (handler main.handler).
	BenchPython = `import os, time

def handler(event, context):
    if isinstance(event, dict):
        if event.get("sleep_ms"):
            time.sleep(event["sleep_ms"] / 1000)
        if event.get("instance"):
            return {"instance": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]}
    return event
`
)
