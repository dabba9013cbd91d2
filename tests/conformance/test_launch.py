"""`iomm launch` and c10d from C++: two ranks on this machine join a Gloo process group over TCPStore and agree on
all-reduce, broadcast, all-gather and barrier; a rank killed with SIGKILL makes its peer exit non-zero within the
timeout, naming it; a failed rank makes the launcher stop the others."""
import os
import signal
import subprocess
import sys
import time

from conftest import iomm_bin, run_iomm


def test_two_ranks_agree_on_every_collective():
    proc = run_iomm("launch", "--nproc", 2, "--", iomm_bin(), "dist", "check", "--rounds", 2, "--mib", 1,
                    "--timeout", 60, timeout=120)
    assert "all-reduce, broadcast, all-gather, barrier correct" in proc.stderr, proc.stderr
    assert "2 ranks, gloo" in proc.stderr, proc.stderr


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_makes_its_peer_exit_naming_it_within_the_timeout():
    port = free_port()
    ranks = []
    for r in (0, 1):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        ranks.append(subprocess.Popen([iomm_bin(), "dist", "check", "--rounds", "1000000", "--mib", "1",
                                       "--timeout", "20"], env=env, stderr=subprocess.PIPE, text=True))
    time.sleep(4)  # joined and inside the all-reduce rounds
    assert ranks[0].poll() is None and ranks[1].poll() is None, "a rank ended early"
    ranks[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    try:
        _, err = ranks[0].communicate(timeout=40)
    finally:
        for p in ranks:
            p.kill()
    assert ranks[0].returncode != 0
    assert time.monotonic() - t0 < 40
    assert "rank(s) 1 stopped" in err, err
    assert "--resume" in err, err


def test_the_launcher_stops_the_other_ranks_when_one_fails():
    t0 = time.monotonic()
    proc = run_iomm("launch", "--nproc", 3, "--grace", 2, "--", sys.executable, "-c",
                    "import os, time, sys\nif os.environ['RANK'] == '1': sys.exit(3)\ntime.sleep(120)",
                    check=False, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - t0 < 30
    assert "rank 1" in proc.stderr and "exited with code 3" in proc.stderr, proc.stderr
