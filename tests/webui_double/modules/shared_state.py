"""modules/shared_state.py: ``State``, the progress and Interrupt flags the WebUI's progress bar reads."""

import time


class State:
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    job_timestamp = "0"
    sampling_step = 0
    sampling_steps = 0
    current_latent = None
    current_image = None
    id_live_preview = 0
    textinfo = None
    time_start = None

    def __init__(self):
        self.begun = []  # test record: every begin(job)

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    def stop_generating(self):
        self.stopping_generation = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0

    def begin(self, job="(unknown)"):
        # as the WebUI's: resets the flags, including ``interrupted``, and sets job_count to -1
        self.begun.append(job)
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.job_no = 0
        self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
        self.current_latent = None
        self.current_image = None
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job

    def end(self):
        self.job = ""
        self.job_count = 0

    def dict(self):
        return {"skipped": self.skipped, "interrupted": self.interrupted, "job": self.job,
                "job_count": self.job_count, "job_no": self.job_no, "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps}
