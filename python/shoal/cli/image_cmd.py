"""``shoal image list|inspect|rm|gc``: the images shoald has built or pulled."""

from __future__ import annotations

from .. import _client
from ..image import format_bytes, service
from . import add_group, add_json_flag, note
from ._output import format_time_ms, print_fields, print_json, print_table
from .queue_cmd import confirm

DESCRIPTION = """\
List, inspect and remove images, and free the disk that removed images used.

An image is built from the steps of a shoal.Image (debian_slim, apt_install, pip_install,
add_local_dir, ...), one cached image per step: its id is a hash of the parent's id and the
step (with the content of the files it copies), so an unchanged step is never rebuilt and
a changed one rebuilds itself and the steps after it. Every listed image is one step of a
chain; PARENT is the image it was built on. Images are shared by every environment."""

EPILOG = """\
examples:
  shoal image list                       every image, newest first
  shoal image list --json
  shoal image inspect im-3f2a…           layers, environment, workdir, entrypoint
  shoal image rm im-3f2a… --yes          remove an image nothing is built on
  shoal image gc                         free the trees and chunks only removed images used

Rebuild on purpose: force_build=True on a step, or SHOAL_IGNORE_CACHE=1 for every layer step
of every image the next `shoal run`/`shoal deploy` builds."""

#: Characters of the canonical step shown in the table.
STEP_WIDTH = 60


def register(subparsers) -> None:
    group = add_group(subparsers, "image", help="list, inspect, remove and garbage-collect images",
                      description=DESCRIPTION, epilog=EPILOG)
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    list_ = commands.add_parser(
        "list", help="images with their step, size and age",
        description="List every image of the cluster, newest first: id, parent, the step that "
        "made it, its number of layers, the content size of all its layers, creation time.")
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    inspect = commands.add_parser(
        "inspect", help="one image: step, layers and configuration",
        description="Show an image: its parent, the step that made it, its layer digests (base "
        "first), its environment, working directory, user, entrypoint, command and the Python "
        "interpreter functions run with.")
    inspect.add_argument("image_id", metavar="ID", help="an image id (im-…)")
    add_json_flag(inspect)
    inspect.set_defaults(handler=cmd_inspect)

    rm = commands.add_parser(
        "rm", help="remove images",
        description="Remove the images ID... Refused for an image another image is built on "
        "(remove that one first); functions that name a removed image fail to start until it is "
        "built again (the next `shoal run`/`shoal deploy` of their app does that). Its files stay "
        "on disk until `shoal image gc`.")
    rm.add_argument("image_ids", metavar="ID", nargs="+", help="image ids (im-…)")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(handler=cmd_rm)

    gc = commands.add_parser(
        "gc", help="free the disk that removed images used",
        description="Delete what no remaining image uses: the materialised trees of removed "
        "images (a tree a running container still has mounted is kept and listed) and every "
        "stored chunk no image's layers reference; pack files that are mostly free space are "
        "rewritten. Builds wait while it runs. Needs an admin token.")
    add_json_flag(gc)
    gc.set_defaults(handler=cmd_gc)


def normalize(info: dict) -> dict:
    """The stable JSON shape of an image."""
    return {
        "image_id": str(info.get("image_id", "")),
        "parent_id": str(info.get("parent_id", "")),
        "step": str(info.get("step", "")),
        "created_at_ms": int(info.get("created_at_ms") or 0),
        "layers": [str(x) for x in info.get("layers") or []],
        "content_bytes": int(info.get("content_bytes") or 0),
        "env": {str(k): str(v) for k, v in dict(info.get("env") or {}).items()},
        "workdir": str(info.get("workdir", "")),
        "user": str(info.get("user", "")),
        "entrypoint": [str(x) for x in info.get("entrypoint") or []],
        "cmd": [str(x) for x in info.get("cmd") or []],
        "python": str(info.get("python", "")),
    }


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        images = [normalize(i) for i in service(conn).list()]
    images.sort(key=lambda i: (-i["created_at_ms"], i["image_id"]))
    if args.json:
        print_json(images)
        return 0
    print_table(
        ["IMAGE", "PARENT", "LAYERS", "SIZE", "CREATED", "STEP"],
        [
            [i["image_id"], i["parent_id"] or "-", len(i["layers"]), format_bytes(i["content_bytes"]),
             format_time_ms(i["created_at_ms"]), _short(i["step"], STEP_WIDTH)]
            for i in images
        ],
        empty="no images (they are built by `shoal run` / `shoal deploy`)",
    )
    return 0


def cmd_inspect(args) -> int:
    with _client.connect(notify=note) as conn:
        info = normalize(service(conn).inspect(args.image_id))
    if args.json:
        print_json(info)
        return 0
    print_fields([
        ("image", info["image_id"]),
        ("parent", info["parent_id"] or "-"),
        ("step", info["step"]),
        ("created", format_time_ms(info["created_at_ms"])),
        ("size", f"{format_bytes(info['content_bytes'])} in {len(info['layers'])} layer(s)"),
        ("python", info["python"] or "- (the image has no Python: functions cannot run in it)"),
        ("workdir", info["workdir"] or "/"),
        ("user", info["user"] or "root"),
        ("entrypoint", " ".join(info["entrypoint"]) or "-"),
        ("cmd", " ".join(info["cmd"]) or "-"),
    ])
    if info["env"]:
        print("env:")
        for key, value in info["env"].items():
            print(f"  {key}={value}")
    if info["layers"]:
        print("layers (base first):")
        for digest in info["layers"]:
            print(f"  sha256:{digest}")
    return 0


def cmd_rm(args) -> int:
    ids = list(dict.fromkeys(args.image_ids))
    if not confirm(f"remove {len(ids)} image(s): {', '.join(ids)}?", args.yes):
        note("not removed")
        return 1
    with _client.connect(notify=note) as conn:
        images = service(conn)
        for image_id in ids:
            images.remove(image_id)
            print(f"removed image {image_id}")
    note("their files stay on disk until `shoal image gc` (admin token) frees what no image uses")
    return 0


def cmd_gc(args) -> int:
    with _client.connect(notify=note) as conn:
        report = service(conn).collect_garbage()
    report["trees_in_use"] = [str(t) for t in report.get("trees_in_use") or []]
    if args.json:
        print_json(report)
        return 0
    print(f"kept {report['images']} image(s)")
    print(f"removed {report['trees_removed']} image tree(s)")
    for tree in report["trees_in_use"]:
        print(f"kept tree {tree}: a running container uses it (run `shoal image gc` again later)")
    print(f"removed {report['chunks_removed']} chunk(s) ({format_bytes(report['chunk_bytes_removed'])}); "
          f"rewrote {report['packs_rewritten']} pack(s), moving {report['chunks_moved']} chunk(s) "
          f"({format_bytes(report['bytes_moved'])}); deleted {report['packs_removed']} pack(s)")
    print(f"freed {format_bytes(report['disk_bytes_freed'])} of chunk storage")
    return 0
