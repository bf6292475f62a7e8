"""`shoal image list|inspect|rm` against the fake server."""

from __future__ import annotations

import json

import shoal
from shoal import cli

from fake_native import fake_connection


def build(fake, image) -> str:
    return image._build(fake_connection(fake), show_progress=False)


def test_image_list_shows_every_step_image_newest_first(fake, capsys):
    image_id = build(fake, shoal.Image.debian_slim().pip_install("numpy").env({"MODE": "prod"}))
    assert cli.main(["image", "list", "--json"]) == 0
    images = json.loads(capsys.readouterr().out)
    assert [i["image_id"] for i in images][0] == image_id and len(images) == 3
    assert set(images[0]) == {
        "image_id", "parent_id", "step", "created_at_ms", "layers", "content_bytes", "env", "workdir",
        "user", "entrypoint", "cmd", "python",
    }
    assert images[0]["parent_id"] == images[1]["image_id"] and images[2]["parent_id"] == ""
    assert cli.main(["image", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["IMAGE", "PARENT", "LAYERS", "SIZE", "CREATED", "STEP"]
    assert out[1].startswith(image_id) and "24.6 MB" in out[1]
    assert "debian_slim 3.11" in out[3]


def test_image_list_when_there_are_none(fake, capsys):
    assert cli.main(["image", "list"]) == 0
    assert "no images" in capsys.readouterr().out


def test_image_inspect(fake, capsys):
    image_id = build(fake, shoal.Image.debian_slim().env({"MODE": "prod"}))
    assert cli.main(["image", "inspect", image_id]) == 0
    out = capsys.readouterr().out
    assert f"image       {image_id}" in out and "MODE=prod" in out and "python      /usr/bin/python3" in out
    assert "sha256:" in out and "12.3 MB in 1 layer(s)" in out
    assert cli.main(["image", "inspect", image_id, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_id"] == image_id and info["env"] == {"MODE": "prod"}
    assert cli.main(["image", "inspect", "im-nope"]) == 1
    assert "shoal: no image im-nope." in capsys.readouterr().err


def test_image_rm_refuses_a_parent_and_removes_a_leaf(fake, capsys):
    leaf = build(fake, shoal.Image.debian_slim().run_commands("true"))
    parent = fake.images[leaf]["parent_id"]
    assert cli.main(["image", "rm", parent, "--yes"]) == 1
    assert f"is built on {parent}" in capsys.readouterr().err
    assert cli.main(["image", "rm", leaf, parent, "--yes"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed image {leaf}", f"removed image {parent}"]
    assert fake.images == {}


def test_image_help_teaches_caching(capsys):
    try:
        cli.main(["image", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "SHOAL_IGNORE_CACHE=1" in out and "force_build=True" in out and "PARENT" in out
