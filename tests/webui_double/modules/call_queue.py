"""modules/call_queue.py: ``queue_lock``, held by every GPU user (txt2img, the API, training)."""

from modules import fifo_lock

queue_lock = fifo_lock.FIFOLock()
