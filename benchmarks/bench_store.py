"""Receive throughput: medws vs DCMTK storescp vs Orthanc (issue 2, item 10).

The same N generated CT instances (512 x 512, 16-bit, explicit VR little endian) are
sent by DCMTK ``storescu`` (``TCP_NODELAY=1`` in its environment) over 1 and over 4
concurrent associations to each receiver, started fresh for each run:

- medws: ``medws node serve`` (fsync of every file + index transaction before the
  success status; ``--workers`` acceptor processes for >1 association), timed once
  its start-up (loading the analysis models) has gone idle; its CPU time per
  instance is recorded
- a pynetdicom no-op SCP (medws's transport settings, a handler that answers success
  without touching the data): the ceiling of any handler on this DICOM stack
- DCMTK ``storescp`` (``TCP_NODELAY=1``; writes files, no fsync, no index), at its
  default settings (one association at a time) and with ``--fork`` (one process per
  association) for the concurrent runs
- Orthanc (files + SQLite index)

Wall time runs from the first association request to the last C-STORE response. The
disk's fsync latency for one instance is measured before and after the runs.
Results go to ``benchmarks/results/bench_store.json`` and ``.md``.

Usage: ``python benchmarks/bench_store.py [--n 400] [--repeat 1] [--quick]``
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_node import samples  # noqa: E402
from tests.support.dcmtk import find_tool, wait_port  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_files(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [samples.save(ds, folder / f"ct_{i:04d}.dcm")
            for i, ds in enumerate(samples.ct_series(n, size=size, seed=42, patient_id="MEDWS-BENCH"))]


def send(files: list[Path], port: int, ae: str, associations: int) -> float:
    """storescu over ``associations`` parallel processes; returns the wall time (s)."""
    storescu = find_tool("storescu")
    chunks = [files[i::associations] for i in range(associations)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([storescu, "-aet", "BENCHSCU", "-aec", ae, "127.0.0.1", str(port), *map(str, chunk)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for chunk in chunks]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return wall


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its children."""
    import psutil

    total = 0.0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def wait_idle(pid: int, timeout_s: float = 120.0, window_s: float = 0.5, busy_cpu_s: float = 0.03) -> None:
    """Wait until the server and its children use < ``busy_cpu_s`` CPU seconds in a
    ``window_s`` window: ``medws node serve`` loads its analysis models in the
    background after it listens, and that start-up must not be timed as receiving."""
    deadline = time.monotonic() + timeout_s
    prev = tree_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = tree_cpu_s(pid)
        if now - prev < busy_cpu_s:
            return
        prev = now


def fsync_latency_ms(folder: Path, size: int, n: int = 15) -> float:
    """Median time (ms) to write ``size`` bytes to a new file in ``folder`` and fsync
    it: the floor of a receiver that makes each instance durable before answering."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    times = []
    for i in range(n):
        path = folder / f"probe{i}"
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append(time.perf_counter() - t0)
        path.unlink()
    times.sort()
    return 1000 * times[len(times) // 2]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def timed_send(proc: subprocess.Popen, files: list[Path], port: int, ae: str, associations: int) -> tuple[float, float]:
    """Once ``proc`` has printed its "listening" line and gone idle: the wall time of
    sending ``files`` and the CPU seconds ``proc`` and its children spent meanwhile."""
    line = proc.stdout.readline() if proc.stdout else ""  # printed once every acceptor listens
    if '"listening"' not in line:
        raise RuntimeError(f"{ae} receiver did not start: {line!r}")
    wait_idle(proc.pid)
    cpu0 = tree_cpu_s(proc.pid)
    wall = send(files, port, ae, associations)
    return wall, tree_cpu_s(proc.pid) - cpu0


def run_medws(files: list[Path], work: Path, associations: int, workers: int, fsync: bool = True) -> dict:
    root = work / "medws"
    port = free_port()
    env = {**os.environ, "MEDWS_FSYNC": "1" if fsync else "0"}
    proc = subprocess.Popen([sys.executable, "-m", "medws", "node", "serve", "--root", str(root), "--host", "127.0.0.1",
                             "--port", str(port), "--ae-title", "MEDWS", "--workers", str(workers),
                             "--no-require-registered"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        wall, cpu_s = timed_send(proc, files, port, "MEDWS", associations)
    finally:
        stop(proc)
    out = subprocess.run([sys.executable, "-m", "medws", "node", "status", "--root", str(root), "--json"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    stored = json.loads(out.stdout)["instances"]
    return {"wall_s": wall, "stored": stored, "workers": workers, "fsync": fsync, "server_cpu_s": cpu_s}


def noop_scp_main(port: int) -> int:
    """A bare pynetdicom storage SCP with medws's transport settings (4 MiB PDU,
    TCP_NODELAY, event-driven waits) whose handler answers success without touching
    the data: the floor of the Python DICOM stack, which no handler can go below."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from dicom_node import scp

    scp.install_event_driven_waits()
    ae = AE(ae_title="NOOP")
    ae.maximum_pdu_size = 4 * 1024 * 1024
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, scp.TRANSFER_SYNTAXES)
    handlers = [(evt.EVT_REQUESTED, scp._wake_dul_on_send), (evt.EVT_C_STORE, lambda event: 0x0000)]
    server = ae.make_server(("127.0.0.1", port), evt_handlers=handlers, server_class=scp._server_class(False))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print('{"event": "listening"}', flush=True)
    try:
        sys.stdin.read()  # until the benchmark closes our stdin
    finally:
        server.shutdown()
    return 0


def run_noop(files: list[Path], work: Path, associations: int) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--noop-scp", str(port)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wall, cpu_s = timed_send(proc, files, port, "NOOP", associations)
    finally:
        if proc.stdin:
            proc.stdin.close()
        stop(proc)
    return {"wall_s": wall, "stored": len(files), "server_cpu_s": cpu_s}


def run_storescp(files: list[Path], work: Path, associations: int, fork: bool) -> dict:
    out_dir = work / "storescp"
    out_dir.mkdir()
    port = free_port()
    args = [find_tool("storescp"), "-aet", "STORESCP", "-od", str(out_dir)] + (["--fork"] if fork else []) + [str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TCP_NODELAY": "1"})
    try:
        wait_port(port)
        wall = send(files, port, "STORESCP", associations)
    finally:
        stop(proc)
    return {"wall_s": wall, "stored": len(list(out_dir.iterdir())), "fork": fork}


def run_orthanc(files: list[Path], work: Path, associations: int) -> dict:
    server = Orthanc(work / "orthanc")
    server.start()
    try:
        wall = send(files, server.dicom_port, "ORTHANC", associations)
        stored = int(server.get("/statistics")["CountInstances"])
    finally:
        server.stop()
    return {"wall_s": wall, "stored": stored}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the median per configuration is reported")
    ap.add_argument("--workers", type=int, default=4,
                    help="medws acceptor processes for the concurrent runs (at least 2)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (n=8, one round), results not written")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--only", help="comma-separated receiver names to run (a development run: results not written)")
    ap.add_argument("--noop-scp", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.noop_scp is not None:
        return noop_scp_main(args.noop_scp)
    n = 8 if args.quick else args.n
    if args.quick:
        args.repeat = 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="medws-bench-") as tmp:
        tmp_path = Path(tmp)
        files = make_files(tmp_path / "src", n, args.size)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        fsync_ms = [fsync_latency_ms(tmp_path / "probe", files[0].stat().st_size)]
        configs = []
        many = max(2, args.workers)  # one acceptor process per association by default
        for assoc in (1, 4):
            if assoc == 1:
                configs.append(("medws", 1, lambda w: run_medws(files, w, 1, 1)))
                configs.append(("medws (no fsync)", 1, lambda w: run_medws(files, w, 1, 1, False)))
            else:
                configs.append(("medws", assoc, lambda w, a=assoc: run_medws(files, w, a, 1)))
                configs.append((f"medws --workers {many}", assoc, lambda w, a=assoc: run_medws(files, w, a, many)))
                configs.append(("medws (no fsync)", assoc, lambda w, a=assoc: run_medws(files, w, a, 1, False)))
            configs.append(("pynetdicom no-op SCP", assoc, lambda w, a=assoc: run_noop(files, w, a)))
            configs.append(("storescp", assoc, lambda w, a=assoc: run_storescp(files, w, a, fork=False)))
            if assoc > 1:
                configs.append(("storescp --fork", assoc, lambda w, a=assoc: run_storescp(files, w, a, fork=True)))
            if shutil.which("Orthanc"):
                configs.append(("orthanc", assoc, lambda w, a=assoc: run_orthanc(files, w, a)))
        if args.only:
            wanted = {w.strip() for w in args.only.split(",")}
            configs = [c for c in configs if c[0] in wanted]
        runs: dict[tuple[str, int], list[dict]] = {}
        for r in range(args.repeat):  # round-robin, so load changes hit every receiver alike
            for name, assoc, fn in configs:
                work = tmp_path / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}_{assoc}_{r}"
                work.mkdir()
                res = fn(work)
                shutil.rmtree(work, ignore_errors=True)
                if res["stored"] != n:
                    raise RuntimeError(f"{name}: stored {res['stored']} of {n}")
                runs.setdefault((name, assoc), []).append(res)
                print(f"round {r}: {name:18s} assoc={assoc}  {n / res['wall_s']:8.1f} inst/s", flush=True)
        fsync_ms.append(fsync_latency_ms(tmp_path / "probe", files[0].stat().st_size))
        for (name, assoc), results in runs.items():
            walls = sorted(x["wall_s"] for x in results)
            median = walls[len(walls) // 2]
            row = {"receiver": name, "associations": assoc, "instances": n, "runs": len(walls),
                   "instances_per_s": n / median, "mb_per_s": total_mb / median, "wall_s": median,
                   "wall_s_all": [round(w, 3) for w in walls]}
            cpus = sorted(x["server_cpu_s"] for x in results if "server_cpu_s" in x)
            if cpus:
                row["server_cpu_ms_per_instance"] = 1000 * cpus[len(cpus) // 2] / n
            rows.append(row)
            print(f"{name:18s} assoc={assoc}  median {row['instances_per_s']:8.1f} inst/s", flush=True)

    def rate(name: str, assoc: int) -> float | None:
        for r in rows:
            if r["receiver"] == name and r["associations"] == assoc:
                return r["instances_per_s"]
        return None

    ratios = {}
    best: dict[int, tuple[str, float]] = {}
    for r in rows:  # medws's best configuration (fsync on) per association count
        if r["receiver"].startswith("medws") and "no fsync" not in r["receiver"]:
            if r["associations"] not in best or r["instances_per_s"] > best[r["associations"]][1]:
                best[r["associations"]] = (r["receiver"], r["instances_per_s"])
    for assoc, (medws_name, m) in best.items():
        for other in ("storescp", "storescp --fork", "orthanc", "medws (no fsync)", "pynetdicom no-op SCP"):
            o = rate(other, assoc)
            if o:
                ratios[f"{medws_name}/{other} @{assoc}"] = m / o
    if 1 not in best or 4 not in best:
        return 0
    targets = {
        f"{best[1][0]}/storescp @1 >= 0.5": best[1][1] / (rate("storescp", 1) or float("inf")) >= 0.5,
        f"{best[4][0]}/storescp @4 >= 1.0": best[4][1] / (rate("storescp", 4) or float("inf")) >= 1.0,
    }
    for k, v in ratios.items():
        print(f"{k:28s} {v:.2f}")
    for k, v in targets.items():
        print(f"target {k}: {'met' if v else 'MISSED'}")
    if args.quick or args.only:
        return 0
    result = {
        "benchmark": "bench_store",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_1m_at_end": os.getloadavg()[0],
                    "fsync_one_instance_ms_before_after": [round(x, 2) for x in fsync_ms]},
        "setup": {"instances": n, "size": f"{args.size}x{args.size} 16-bit CT, explicit VR LE",
                  "total_mb": round(total_mb, 1), "sender": "DCMTK storescu, TCP_NODELAY=1, one process per association",
                  "medws": "`medws node serve` (timed once its start-up, incl. loading the analysis models, is idle): "
                           "fsync file + directory and index transaction before each success; "
                           "max PDU 4 MiB; TCP_NODELAY; header elements decoded from their bytes, pixel data never "
                           "decoded; event-driven pynetdicom waits; 1 acceptor "
                           "process, and --workers N processes (the main one hands accepted associations round-robin to them) for 4 associations",
                  "storescp": "TCP_NODELAY=1, default PDU, writes files without fsync or index",
                  "orthanc": "default storage + SQLite index", "repeat": args.repeat,
                  "statistic": "median wall time over the rounds (receivers run round-robin)"},
        "rows": rows, "ratios": ratios, "targets_met": targets,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_store.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# bench_store — instances/s received (written by benchmarks/bench_store.py)", "",
             f"{n} CT instances {args.size}x{args.size} 16-bit ({total_mb:.0f} MB), sender DCMTK storescu "
             f"(TCP_NODELAY=1), {result['machine']['cpus']} CPUs, {result['date']}.", "",
             f"Median of {args.repeat} round-robin rounds; 1-minute load average at the end: "
             f"{result['machine']['load_avg_1m_at_end']:.1f} (shared machine). Writing + fsyncing one instance's "
             f"file on this disk took {fsync_ms[0]:.1f} ms before the runs and {fsync_ms[1]:.1f} ms after (median): "
             f"a receiver that makes each instance durable before answering cannot exceed "
             f"~{1000 / max(fsync_ms):.0f} instances/s on one association here.", "",
             "| receiver | associations | instances/s | MB/s | median wall s | all wall s | server CPU ms/instance |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = r.get("server_cpu_ms_per_instance")
        lines.append(f"| {r['receiver']} | {r['associations']} | {r['instances_per_s']:.1f} | {r['mb_per_s']:.1f} | "
                     f"{r['wall_s']:.2f} | {', '.join(f'{w:.2f}' for w in r['wall_s_all'])} | "
                     f"{'' if cpu is None else f'{cpu:.2f}'} |")
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if v else 'missed'}" for k, v in targets.items()), ""]
    (args.out / "bench_store.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
