"""JobRunner: FIFO order, cancel (queued and running), failures reported, state on disk, restart."""

import json
import threading
import time

import pytest

from lora_trainer.errors import UserError
from lora_trainer.jobs import CANCELLED, FAILED, FINISHED, INTERRUPTED, JobRunner


def test_two_jobs_run_in_order(tmp_path):
    r = JobRunner(tmp_path)
    order = []
    gate = threading.Event()

    def job(name):
        def fn(ctx):
            if name == "a":
                gate.wait(5)
            order.append((name, r.running()))
            ctx.progress({"step": 1, "total": 1})
            ctx.log({"step": 1, "loss": float("nan")})
            return {"name": name}
        return fn

    a = r.submit("train", job("a"), {"x": 1})
    b = r.submit("train", job("b"))
    time.sleep(0.2)
    assert r.get(a)["status"] == "running" and r.get(b)["status"] == "queued"
    gate.set()
    assert r.wait(b, 10)["status"] == FINISHED
    assert [o[0] for o in order] == ["a", "b"] and order[0][1] == a and order[1][1] == b
    st = json.loads((tmp_path / a / "state.json").read_text())
    assert st["status"] == FINISHED and st["result"] == {"name": "a"} and st["config"] == {"x": 1}
    assert json.loads((tmp_path / a / "log.jsonl").read_text().splitlines()[0])["loss"] is None  # NaN -> null
    r.shutdown()


def test_cancel_running_job_frees_the_runner_and_cancel_queued_never_starts(tmp_path):
    r = JobRunner(tmp_path)
    started = threading.Event()
    ran = []

    def long(ctx):
        started.set()
        while not ctx.should_stop():
            time.sleep(0.01)
        return {"cancelled": True}

    a = r.submit("train", long)
    b = r.submit("train", lambda ctx: ran.append("b"))
    c = r.submit("train", lambda ctx: ran.append("c") or {"ok": 1})
    started.wait(5)
    assert r.cancel(b) is True
    assert r.cancel(a) is True
    assert r.wait(a, 10)["status"] == CANCELLED
    assert r.wait(c, 10)["status"] == FINISHED
    assert r.get(b)["status"] == CANCELLED and ran == ["c"]
    assert r.cancel(a) is False  # already done
    r.shutdown()


def test_failures_are_reported_and_the_runner_goes_on(tmp_path):
    r = JobRunner(tmp_path)

    def user(ctx):
        raise UserError("bad rank", "use 8")

    def crash(ctx):
        raise RuntimeError("boom")

    a, b = r.submit("x", user), r.submit("x", crash)
    c = r.submit("x", lambda ctx: {"fine": True})
    assert r.wait(a, 10)["error"] == {"kind": "user", "message": "bad rank", "hint": "use 8"}
    eb = r.wait(b, 10)
    assert eb["status"] == FAILED and eb["error"]["kind"] == "internal" and "boom" in eb["error"]["message"]
    assert "RuntimeError" in (tmp_path / b / "error.log").read_text()
    assert r.wait(c, 10)["status"] == FINISHED
    r.shutdown()


def test_a_finished_job_keeps_nothing_it_held_alive(tmp_path, monkeypatch):
    """What a job's closure holds (a tagger's model, a backend) is gone when the runner frees memory after
    the job (so the GPU cache is really emptied), and is not kept alive while the runner waits idle."""
    import gc
    import weakref

    from lora_trainer import jobs

    class Big:
        pass

    held = Big()
    ref = weakref.ref(held)
    at_free = []
    monkeypatch.setattr(jobs, "_free_memory", lambda: (gc.collect(), at_free.append(ref() is None)))
    r = JobRunner(tmp_path)
    jid = r.submit("x", lambda ctx, big=held: {"ok": big is not None})
    del held
    assert r.wait(jid, 10)["status"] == FINISHED
    for _ in range(50):  # _free_memory runs just after the state says finished
        if at_free:
            break
        time.sleep(0.02)
    assert at_free == [True]
    r.shutdown()


def test_restart_lists_jobs_and_marks_interrupted(tmp_path):
    r = JobRunner(tmp_path)
    done = r.submit("train", lambda ctx: {"ok": 1})
    r.wait(done, 10)
    r.shutdown()
    # a job that was running when the process died
    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / "state.json").write_text(json.dumps(
        {"id": "dead", "kind": "train", "status": "running", "config": {}, "progress": {"step": 3},
         "error": None, "result": None, "created": time.time(), "started": None, "finished": None}))
    r2 = JobRunner(tmp_path)
    states = {s["id"]: s["status"] for s in r2.list()}
    assert states == {done: FINISHED, "dead": INTERRUPTED}
    assert json.loads((tmp_path / "dead" / "state.json").read_text())["status"] == INTERRUPTED
    r2.shutdown()


def test_wait_returns_only_after_the_listeners_were_told(tmp_path):
    """The state turns finished before the listeners run: a wait() that starts in that gap still waits for
    them (the tab and the WebUI's job lock rely on it). A slow listener holds the gap open."""
    r = JobRunner(tmp_path)
    told = []
    r.subscribe(lambda j, e, d: (time.sleep(0.5), told.append(e)) if e == FINISHED else None)
    j = r.submit("x", lambda ctx: {"ok": 1})
    deadline = time.time() + 10
    while r.get(j)["status"] != FINISHED and time.time() < deadline:
        time.sleep(0.005)
    assert r.get(j)["status"] == FINISHED and told == []  # inside the gap: the listener is still asleep
    r.wait(j, 10)
    assert told == [FINISHED]
    r.shutdown()


def test_listener_failure_does_not_break_jobs(tmp_path):
    r = JobRunner(tmp_path)
    events = []
    r.subscribe(lambda j, e, d: (_ for _ in ()).throw(ValueError("ui broke")))
    r.subscribe(lambda j, e, d: events.append(e))
    j = r.submit("x", lambda ctx: ctx.progress({"step": 1, "total": 2}) or {"ok": 1})
    assert r.wait(j, 10)["status"] == FINISHED
    assert events == ["queued", "running", "progress", "finished"]
    r.shutdown()


def test_a_job_returning_a_bare_value_finishes_and_the_runner_goes_on(tmp_path):
    """``result.get`` on a job's ``True`` raised outside the job's try and killed the worker thread: every
    later job then stayed queued."""
    r = JobRunner(tmp_path)
    a = r.submit("x", lambda ctx: True)
    b = r.submit("x", lambda ctx: {"ok": 1})
    assert r.wait(a, 10)["status"] == FINISHED and r.get(a)["result"] == {"value": True}
    assert r.wait(b, 10)["status"] == FINISHED
    r.shutdown()


def test_lock_is_held_around_each_job(tmp_path):
    lock = threading.Lock()
    r = JobRunner(tmp_path, lock=lock)
    seen = []
    j = r.submit("x", lambda ctx: seen.append(lock.locked()))
    r.wait(j, 10)
    assert seen == [True] and not lock.locked()
    r.shutdown()


def test_an_unlocked_job_runs_while_the_host_lock_is_held(tmp_path):
    """A download (``locked=False``) must not wait for, nor hold, the WebUI's queue lock; other jobs still
    take it."""
    import threading

    lock = threading.Lock()
    runner = JobRunner(tmp_path, lock=lock)
    try:
        with lock:  # the WebUI is busy with a txt2img
            free = runner.submit("download", lambda ctx: {"held": lock.locked()}, locked=False)
            assert runner.wait(free, timeout=10)["status"] == "finished"
            locked = runner.submit("train", lambda ctx: {})
            with pytest.raises(TimeoutError):
                runner.wait(locked, timeout=0.5)
        assert runner.wait(locked, timeout=10)["status"] == "finished"
    finally:
        runner.shutdown()
