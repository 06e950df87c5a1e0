"""The application layer the tab and the API share: projects, and every step as a job on one runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import needs_diffusers, world_photos
from lora_trainer.errors import UserError




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
    files = world_photos(tmp_path / "upload", 3)
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
    svc.add_images("p", world_photos(tmp_path / "upload", 3))
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


def test_add_images_checks_on_arrival_names_each_refused_file_and_skips_exact_duplicates(tmp_path):
    """#28: an empty file, a text file named .jpg, a truncated JPEG and a decompression bomb are refused by
    name with the reason (they used to be counted as added and shown broken), an exact duplicate of a project
    image or of an earlier file of the batch is skipped and said (adding the same photos again used to make
    ``_2`` copies), and the count that comes back is the project's."""
    from PIL import Image

    from prepare_fixtures import photo
    from lora_trainer.service import Service

    svc = Service(tmp_path / "ws")
    svc.create_project("p")
    first = world_photos(tmp_path / "first", 2)
    rep = svc.add_images("p", first)
    assert rep["copied"] == [f.name for f in first] and rep["rejected"] == rep["duplicates"] == []
    assert rep["source_images"] == 2
    up = tmp_path / "upload"
    up.mkdir()
    photo(640, 480, 5).save(up / "new.jpg", quality=90)
    (up / "same-new.jpg").write_bytes((up / "new.jpg").read_bytes())       # a duplicate inside the batch
    (up / "again.png").write_bytes(first[0].read_bytes())                  # a duplicate of a project image
    (up / "empty.jpg").write_bytes(b"")
    (up / "readme.jpg").write_text("not a photo", encoding="utf-8")
    photo(640, 480, 6).save(up / "whole.jpg", quality=90)
    data = (up / "whole.jpg").read_bytes()
    (up / "cut.jpg").write_bytes(data[: len(data) // 2])                   # a half-copied photo
    (up / "whole.jpg").unlink()
    Image.new("1", (13000, 12000)).save(up / "bomb.png")                   # 156 MP in a few kB
    rep = svc.add_images("p", sorted(up.iterdir()))
    assert rep["copied"] == ["new.jpg"], rep
    reasons = {r["file"]: r["reason"] for r in rep["rejected"]}
    assert sorted(reasons) == ["bomb.png", "cut.jpg", "empty.jpg", "readme.jpg"], reasons
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["readme.jpg"] == "not an image (format not recognised)"
    assert reasons["cut.jpg"].startswith("truncated file")
    assert reasons["bomb.png"].startswith("too many pixels: 13000x12000") and "decompression-bomb" in reasons["bomb.png"]
    dups = {r["file"]: r for r in rep["duplicates"]}
    assert sorted(dups) == ["again.png", "same-new.jpg"], dups
    assert dups["again.png"]["duplicate_of"] == first[0].name and "already in the project" in dups["again.png"]["reason"]
    assert dups["same-new.jpg"]["duplicate_of"] == "new.jpg" and "in this upload" in dups["same-new.jpg"]["reason"]
    names = sorted([f.name for f in first] + ["new.jpg"])
    assert svc.images("p", "source") == names and rep["source_images"] == 3 == svc.project_info("p")["source_images"]
    # the same files again: nothing added, no _2 copies, each said
    rep = svc.add_images("p", first + [up / "new.jpg"])
    assert rep["copied"] == [] and len(rep["duplicates"]) == 3 and rep["source_images"] == 3
    assert sorted(p.name for p in svc.project("p").source.iterdir()) == names
    assert not [p for p in svc.project("p").root.iterdir() if p.name.startswith(".lt-tmp")]  # staging removed
    svc.runner.shutdown()
