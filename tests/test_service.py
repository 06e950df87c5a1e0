"""The application layer the tab and the API share: projects, and every step as a job on one runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import needs_diffusers
from lora_trainer.errors import UserError


def _world_images(folder, n=4):
    import numpy as np

    from lora_trainer.toy.world import render, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        render(sample_scene(rng)).save(folder / f"照片{i}.png")
    return sorted(folder.iterdir())


def test_phone_formats_are_source_images_and_the_tab_shows_heic_by_a_thumbnail(tmp_path):
    """A HEIC (or TIFF) photo is listed and counted among the project's source images, accepted by the API's
    upload, and the tab's gallery shows it through a JPEG a browser can display."""
    from prepare_fixtures import HAS_HEIF, heic_photo, photo

    from lora_trainer.api.uploads import image_exts
    from lora_trainer.service import Service
    from lora_trainer.ui.step_images import gallery

    if not HAS_HEIF:
        pytest.skip("pillow-heif not installed (both CI profiles have it)")
    up = tmp_path / "upload"
    up.mkdir()
    heic_photo(up / "IMG_0001.HEIC", 300, 200, 1)
    photo(64, 64, 2).save(up / "scan.tif")
    photo(64, 64, 3).save(up / "a.jpg")
    svc = Service(tmp_path / "ws")
    svc.create_project("p")
    svc.add_images("p", sorted(up.iterdir()))
    assert svc.images("p", "source") == ["IMG_0001.HEIC", "a.jpg", "scan.tif"]
    assert svc.project_info("p")["source_images"] == 3
    assert {".heic", ".heif", ".avif", ".tif"} <= set(image_exts())
    views = gallery(svc, "p")  # made on a thread pool: the order is still the listing's
    assert [name for _, name in views] == svc.images("p", "source")
    shown = dict((name, path) for path, name in views)
    assert shown["a.jpg"].endswith("source/a.jpg")
    for name in ("IMG_0001.HEIC", "scan.tif"):
        assert "/cache/thumbs/" in shown[name] and shown[name].endswith(".jpg"), shown
    svc.delete_image("p", "IMG_0001.HEIC", "source")  # its thumbnail goes with it
    assert sorted(p.name for p in svc.thumbs_dir("p").iterdir()) == [Path(shown["scan.tif"]).name]
    svc.runner.shutdown()


def test_projects_lifecycle_and_name_rules(tmp_path):
    from lora_trainer.service import Service

    svc = Service(tmp_path / "ws")
    info = svc.create_project("Amy", trigger="amy", repeats=10)
    assert info["name"] == "Amy" and info["dataset_dir"].endswith("10_amy")
    with pytest.raises(UserError, match="already exists"):
        svc.create_project("Amy")
    for bad in ("../x", "", "a/b", "名字"):
        with pytest.raises(UserError, match="invalid project name"):
            svc.create_project(bad)
    assert [p["name"] for p in svc.projects()] == ["Amy"]
    # the training config's repeats are the project's (its folder's), over the preset's and a saved config's
    assert svc.train_config("Amy").repeats == 10
    svc.save_train_config("Amy", svc.train_config("Amy", {"repeats": 3}))
    svc.update_project("Amy", repeats=1)
    assert svc.train_config("Amy").repeats == 1 and svc.project_info("Amy")["dataset_dir"].endswith("1_amy")
    svc.delete_project("Amy")
    assert svc.projects() == []
    svc.runner.shutdown()


def test_images_are_copied_never_moved_and_deletion_is_confined(tmp_path):
    from lora_trainer.service import Service

    svc = Service(tmp_path / "ws")
    svc.create_project("p")
    files = _world_images(tmp_path / "upload", 3)
    before = {f.name: f.read_bytes() for f in files}
    svc.add_images("p", files)
    assert {f.name: f.read_bytes() for f in (tmp_path / "upload").iterdir()} == before
    assert len(svc.images("p", "source")) == 3
    with pytest.raises(UserError):
        svc.delete_image("p", "../../upload/照片0.png", "source")
    svc.delete_image("p", svc.images("p", "source")[0], "source")
    assert len(svc.images("p", "source")) == 2
    svc.runner.shutdown()


@needs_diffusers
def test_the_steps_run_as_jobs_in_the_project(tmp_path):
    from lora_trainer.service import Service

    svc = Service(tmp_path / "ws")
    svc.create_project("p", trigger="zkw", repeats=2)
    svc.add_images("p", _world_images(tmp_path / "upload", 3))
    j1 = svc.preprocess("p", {"crop": "center", "size": 64, "background": "none"})
    j2 = svc.autotag("p", {"tagger": "toy", "trigger": "zkw"})
    j3 = svc.train("p", {"max_steps": 2, "optimizer": "AdamW", "save_fractions": [0.5]})
    for j in (j1, j2, j3):
        st = svc.runner.wait(j, 600)
        assert st["status"] == "finished", st
    assert (tmp_path / "ws/p/jobs" / j3 / "state.json").is_file()
    caps = sorted((tmp_path / "ws/p/dataset/2_zkw").glob("*.txt"))
    assert len(caps) == 3 and all(c.read_text(encoding="utf-8").startswith("zkw, ") for c in caps)
    outs = [o["name"] for o in svc.outputs("p")]
    assert "zkw.safetensors" in outs and "zkw-step000001.safetensors" in outs
    j4 = svc.generate("p", ["zkw, red"], lora="zkw.safetensors", steps=2, seeds=(1, 2))
    st = svc.runner.wait(j4, 600)
    assert st["status"] == "finished" and len(st["result"]["images"]) == 2
    with pytest.raises(UserError):
        svc.generate("p", ["x"], lora="../../p/project.json")
    svc.runner.shutdown()
    # a restart lists the project's jobs from disk
    again = Service(tmp_path / "ws")
    assert {s["id"] for s in again.runner.list()} == {j1, j2, j3, j4}
    assert again.train_config("p").max_steps == 2  # the project keeps the config it trained with
    again.runner.shutdown()
