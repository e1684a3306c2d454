"""A stand-in worker process for runner tests: speaks the JSON-lines protocol, no torch.

Run as ``python slicer_fake_worker.py JOB.json``; the job's ``behaviour`` picks what happens:
ok, error, crash, killed, slow (cancellable by SIGTERM or the cancel file), stubborn (ignores
SIGTERM and has a child process, so only killing the tree stops it), noise (non-JSON output).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def emit(**data) -> None:
    print(json.dumps(data), flush=True)


def main() -> int:
    jobPath = Path(sys.argv[1])
    job = json.loads(jobPath.read_text())
    behaviour = job.get("behaviour", "ok")
    emit(event="progress", stage="loading", fraction=0.0, message="starting")
    if behaviour == "ok":
        emit(event="progress", stage="inference", fraction=0.5, epoch=1, epochs=2, loss=0.5)
        print("a warning on stderr", file=sys.stderr, flush=True)
        Path(job["output"]).write_text("done")
        emit(event="result", output=job["output"], warnings=["fake warning"])
        return 0
    if behaviour == "noise":
        print("not json at all", flush=True)
        print('{"json": "but no event"}', flush=True)
        emit(event="result")
        return 0
    if behaviour == "error":
        emit(event="error", message="The image is 2D; a 3D volume is needed.")
        return 1
    if behaviour == "crash":
        print("Traceback (most recent call last):\nRuntimeError: boom", file=sys.stderr, flush=True)
        return 7
    if behaviour == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if behaviour == "slow":
        def stop(*_):
            emit(event="cancelled")
            sys.exit(3)

        signal.signal(signal.SIGTERM, stop)
        cancelFile = Path(str(jobPath) + ".cancel")
        for _ in range(600):
            if cancelFile.exists():
                stop()
            emit(event="progress", stage="training", fraction=0.1)
            time.sleep(0.05)
        return 0
    if behaviour == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        Path(job["output"]).write_text(str(child.pid))
        emit(event="progress", stage="training", fraction=0.1, message=f"child {child.pid}")
        time.sleep(60)
        return 0
    emit(event="error", message=f"unknown behaviour {behaviour}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
