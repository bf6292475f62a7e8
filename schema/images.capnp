@0xcbf1feb8ae43c7cd;
# Images (docs/images.md). Reached from `Session.images()`. Images are content-addressed and
# shared by every environment: an image id names the same tree everywhere.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::wire");

using Common = import "common.capnp";

struct ImageStep {
  kind @0 :Text;
  # Base steps (first only): "debian_slim" (args: [python_version]), "scratch" (no args),
  # "registry" (args: [reference]; `registryAuth` for a private registry).
  # Layer steps: "apt_install" (args: packages), "pip_install" (args: packages, then options
  # as "--index-url=…", "--find-links=…", or verbatim extra options after "--"),
  # "run_commands" (args: shell commands, run in order with `sh -c`, stopping at the first
  # failure), "run_function" (blob: the pickled zero-argument callable), "add_files" (blob: a tar
  # archive; args: [destination dir]).
  # Metadata steps (no layer): "env" (args: K=V ...), "workdir" (args: [dir]), "user" (args:
  # [user]), "entrypoint" (args: argv), "cmd" (args: argv).
  args @1 :List(Text);
  blob @2 :Text;                 # sha256 hex of an uploaded blob (Functions.putBlobs), or empty
  env @3 :List(Common.KeyValue); # extra environment for this step only (secrets); not hashed.
                                 # Key "@secret:NAME" (value NAME): a named secret's variables.
  forceBuild @4 :Bool;           # rebuild this step (and the steps after it) even if cached
  registryAuth @5 :Common.KeyValue;  # "registry": username/password (or "" / bearer token)
  label @6 :Text;                # how the CLI names the step ("RUN apt-get …", "Dockerfile:7")
}

struct ImageSpec {
  steps @0 :List(ImageStep);     # the base step first
  ignoreCache @1 :Bool;          # SHOAL_IGNORE_CACHE: rebuild every layer step
}

enum StepStatus {
  cached @0;                     # the image existed; nothing ran
  building @1;                   # started (sent as progress; never a final status)
  built @2;
  failed @3;
}

struct StepResult {
  index @0 :UInt32;
  imageId @1 :Text;
  status @2 :StepStatus;
  reason @3 :Text;               # why it was (re)built, empty when cached
  durationMs @4 :UInt64;
  layerBytes @5 :UInt64;         # content bytes of the step's new layer (0 for metadata steps)
}

interface BuildProgress {
  # Implemented by the client; the builder calls it while it works.
  step @0 (result :StepResult) -> stream;
  line @1 (index :UInt32, text :Text) -> stream;   # one line of a step's output
}

struct ImageInfo {
  imageId @0 :Text;
  parentId @1 :Text;
  step @2 :Text;                 # the canonical step
  createdAtMs @3 :Int64;
  layers @4 :List(Text);         # layer digests (sha256 hex), base first
  contentBytes @5 :UInt64;       # file content of all layers
  env @6 :List(Common.KeyValue);
  workdir @7 :Text;
  user @8 :Text;
  entrypoint @9 :List(Text);
  cmd @10 :List(Text);
  python @11 :Text;              # the interpreter functions run with; empty: the image has none
}

interface Images {
  build @0 (spec :ImageSpec, progress :BuildProgress) -> (imageId :Text, steps :List(StepResult));
  # Builds what is missing, in order. Answers at once when every step is cached. [invalid_argument]
  # for a malformed spec (the message names the step); a failing step: [failed_precondition]-like
  # [invalid_argument] "step N (<label>) failed with exit code X" after its output was streamed.
  list @1 () -> (images :List(ImageInfo));
  inspect @2 (imageId :Text) -> (image :ImageInfo);
  remove @3 (imageId :Text) -> ();
  # [not_found]; [invalid_argument] when another image is built on it (the message names it).
  # The image's files stay on disk until collectGarbage.
  collectGarbage @4 () -> (report :GarbageReport);
  # Frees the trees and chunks that only removed images used (builds wait while it runs).
  # Admin tokens only: [permission_denied] otherwise.
}

struct GarbageReport {
  images @0 :UInt64;             # recorded images, all kept
  treesRemoved @1 :UInt64;       # materialised trees of removed images
  treesInUse @2 :List(Text);     # trees of removed images still mounted by containers: kept
  chunksRemoved @3 :UInt64;
  chunkBytesRemoved @4 :UInt64;
  packsRewritten @5 :UInt64;     # packs whose live chunks were moved out
  packsRemoved @6 :UInt64;
  chunksMoved @7 :UInt64;
  bytesMoved @8 :UInt64;
  diskBytesFreed @9 :UInt64;     # pack bytes deleted minus bytes moved
}
