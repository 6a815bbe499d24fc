"""How the tests start runs: one plain process, or `accelerate launch` with a shipped config (2 CPU processes).

Each launch gets a free rendezvous port, so that two distributed tests (or two people's) on one machine never
meet at torchrun's default port 29500.
"""

import os
import signal
import socket
import sys

from helpers.paths import ROOT

ACCEL = ROOT / "configs" / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    """One thread per process, no GPU (the CPU configs), the tests' helper components importable."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"), CUDA_VISIBLE_DEVICES="",
                MMGRPO_COMPONENT_PREFIXES="helpers.")


def launcher(engine: str | None, config_file: str | None = None) -> list[str]:
    """The command prefix running a script under `engine` ('ddp' | 'fsdp2' on 2 CPU processes; None: plainly)."""
    if engine is None:
        return [sys.executable]
    cfg = config_file or str(ACCEL / f"{engine}_cpu.yaml")
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cfg,
            "--main_process_port", str(free_port())]


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a launched run: the launcher and every process under it (torchrun starts each rank in a
    session of its own, so killing the launcher's process group would leave the ranks training)."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs[1:], timeout=30)      # not the root: its Popen must reap it to see -SIGKILL
    return [p.pid for p in procs]
