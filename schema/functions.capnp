@0xf307c0ca318dc29c;
# Apps, functions and calls (DESIGN.md §2, §8; docs/functions.md). Reached from `Session.functions()`.
#
# Payloads (`args`, `data`) are opaque to the server: the SDK cloudpickles them and the guest
# runtime unpickles them (docs/guest-protocol.md).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::wire");

using Common = import "common.capnp";

enum AppMode {
  ephemeral @0;   # stops when its client goes away (capability dropped or heartbeat missed)
  detached @1;    # `shoal run --detach`: keeps running until its inputs are done or it is stopped
  deployed @2;    # `shoal deploy`: versioned, survives daemon restarts, looked up by name
}

struct RetryPolicy {
  maxRetries @0 :UInt32;              # 0: no retries
  initialDelayMs @1 :UInt64 = 1000;
  backoffCoefficient @2 :Float64 = 1.0;
  maxDelayMs @3 :UInt64 = 60000;
}

struct Autoscaling {
  minContainers @0 :UInt32;           # keep warm
  maxContainers @1 :UInt32;           # 0: no limit beyond the node's capacity
  bufferContainers @2 :UInt32;        # idle containers kept on top of the demand
  scaledownWindowMs @3 :UInt64 = 60000;
}

struct FunctionSpec {
  name @0 :Text;                      # "square", or "Model" for a class
  isClass @1 :Bool;
  isGenerator @2 :Bool;
  definition @3 :Data;                # the SDK's pickled definition, handed to the guest in INIT
  timeoutMs @4 :UInt64 = 300000;      # per attempt
  retries @5 :RetryPolicy;
  autoscaling @6 :Autoscaling;
  maxInputs @7 :UInt32 = 1;           # concurrent inputs per container (@shoal.concurrent)
  cpuMillis @8 :UInt32;               # 0: no cpu limit; 1000 = one core
  memoryMb @9 :UInt32;                # 0: no memory limit
  image @10 :Text;                    # image id; empty: the default image
  env @11 :List(Common.KeyValue);    # in order, later wins; key "@secret:NAME" (value NAME): the
                                      # named secret's variables, read by the supervisor at start
  files @12 :List(CodeFile);          # the image's copy=False files (Image.add_local_*(copy=False)):
                                      # path = where it goes in the container, without the leading
                                      # "/"; uploaded with putBlobs, laid over the image at start
}

struct CodeFile {
  path @0 :Text;                      # relative to the code root, normalised, no ".."
  sha256 @1 :Text;                    # hex; the content is uploaded with putBlobs
  mode @2 :UInt32;
}

struct AppInfo {
  appId @0 :Text;                     # "ap-<hex>"
  name @1 :Text;
  mode @2 :AppMode;
  state @3 :Text;                     # "running", "stopped"
  version @4 :UInt32;                 # deployments: 1, 2, ...
  createdAtMs @5 :Int64;
  functionNames @6 :List(Text);
  environment @7 :Text;
}

struct FunctionRef {
  functionId @0 :Text;                # "fu-<hex>"
  name @1 :Text;
  appName @2 :Text;
  isClass @3 :Bool;
  isGenerator @4 :Bool;
  definition @5 :Data;                # so a looked-up function can be called like a local one
}

enum OutputStatus {
  success @0;                         # data = pickled return value
  failure @1;                         # data = pickled exception (may be empty), error = traceback
  timeout @2;                         # the attempt exceeded timeoutMs; error says which function
  cancelled @3;
  internalError @4;                   # the container crashed / was OOM-killed; error says why
  generatorItem @5;                   # one yielded value; more follow
  generatorDone @6;
}

struct Output {
  index @0 :UInt64;                   # position of the input within its call
  status @1 :OutputStatus;
  data @2 :Data;
  error @3 :Text;
  attempts @4 :UInt32;
}

struct Input {
  index @0 :UInt64;
  args @1 :Data;
}

interface OutputReceiver {
  # Implemented by the client; the server pushes outputs as they finish (flow controlled).
  outputs @0 (outputs :List(Output)) -> stream;
  done @1 () -> ();                   # every input of the call has its final output
}

interface InputSink {
  push @0 (inputs :List(Input)) -> stream;
  close @1 () -> ();                  # no more inputs
}

interface LogReceiver {
  lines @0 (lines :List(LogLine)) -> stream;
  end @1 () -> ();
  # Followed streams only, once: the app has stopped and every one of its containers has ended
  # with its output delivered (stdout and stderr read to EOF, every line sent before this call).
  # No line follows. Receivers that predate it answer UNIMPLEMENTED, which the server ignores.
}

struct LogLine {
  atMs @0 :Int64;
  containerId @1 :Text;
  stream @2 :UInt8;                   # 1 stdout, 2 stderr, 3 system
  text @3 :Text;
}

interface App {
  # Held by the client of an ephemeral app: dropping it (or missing heartbeats) stops the app.
  info @0 () -> (info :AppInfo);
  heartbeat @1 () -> ();
  stop @2 () -> ();
}

struct ContainerInfo {
  containerId @0 :Text;
  appName @1 :Text;
  functionName @2 :Text;
  state @3 :Text;                     # booting, idle, busy, draining, stopped, crashed
  inflight @4 :UInt32;
  startedAtMs @5 :Int64;
  nodeId @6 :Text;
}

interface Functions {
  missingBlobs @0 (sha256 :List(Text)) -> (missing :List(Text));
  putBlobs @1 (blobs :List(Blob)) -> ();
  # Content-addressed code upload: ask which are missing, send only those. Durable on return.

  createApp @2 (name :Text, mode :AppMode, functions :List(FunctionSpec), code :List(CodeFile))
      -> (app :App, info :AppInfo, functions :List(FunctionRef));
  # Deployed apps get the next version under their name; functions of the previous version keep
  # serving calls already made to them.

  lookup @3 (appName :Text, name :Text) -> (function :FunctionRef);
  # [not_found] names the app or the function that is missing.

  call @4 (functionId :Text, args :Data) -> (output :Output);
  # `.remote`: one input; returns its final output. Not durable (use spawn for that).

  map @5 (functionId :Text, receiver :OutputReceiver) -> (inputs :InputSink, callId :Text);
  # `.map`/`.starmap`/`.for_each`/`.remote_gen`: push inputs, receive outputs as they finish.

  spawn @6 (functionId :Text, args :Data) -> (callId :Text);
  # Durable before it returns: survives a daemon crash; the input is re-dispatched after restart.

  getOutputs @7 (callId :Text, timeoutMs :UInt64) -> (outputs :List(Output), done :Bool);
  # Waits up to timeoutMs (0: just look) for the call to finish. A spawned call's result is kept
  # for 7 days.

  cancel @8 (callId :Text) -> ();

  listApps @9 () -> (apps :List(AppInfo));
  stopApp @10 (name :Text) -> ();
  appLogs @11 (name :Text, receiver :LogReceiver, follow :Bool) -> (willEnd :Bool);
  # The app's recent lines, then (follow) live ones until it ends. willEnd: this server calls
  # `receiver.end()` once the followed app has stopped and its output is all delivered; false from
  # servers that predate `end` (their follow never ends: the client stops it).
  listContainers @12 () -> (containers :List(ContainerInfo));
  stopContainer @13 (containerId :Text) -> ();

  derive @14 (functionId :Text, name :Text, spec :FunctionSpec, fields :List(Text))
      -> (function :FunctionRef);
  # A function added to a registered one's app (same code), with the `fields` of `spec` replacing
  # the base's: a class instance with constructor arguments (definition), a `.with_options()`
  # variant (timeoutMs, retries, ...). Field names are the SDK's spec keys ("definition",
  # "timeout_ms", "max_retries", ...). Idempotent by name: deriving an existing name returns it.
}

struct Blob {
  sha256 @0 :Text;
  data @1 :Data;
}
