"""S3 throughput through stock boto3: the built-in endpoint of a real ``stcloud serve`` next to
moto's S3 server, both separate processes on loopback, measured in the same run.

1. a 256 MiB object: ``upload_file`` (multipart, 8 MiB parts, 10 threads) and
   ``download_file`` (parallel ranged GETs) against each server; MiB/s and the ratio
   stcloud / moto, plus each server's peak RSS during the transfers;
2. a 1 GiB ``upload_file`` to stcloud alone, with the server's peak RSS, which must stay under
   150 MiB (exit status 1 otherwise): bodies are streamed to disk, never held in memory.

    python -m bench s3                 # both parts
    python -m bench s3 -- --size-mib 64 --big-mib 0   # quick run

The figure is the ratio; absolute MiB/s depend on the machine. Temp files (up to ~3 GiB:
source, stored object, multipart staging) are removed at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
RSS_LIMIT_MIB = 150


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early (status {proc.returncode})")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


class RssSampler:
    """Peak resident set size of a process, sampled every 20 ms while running."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            self.peak = max(self.peak, self.proc.memory_info().rss)
        except Exception:  # noqa: BLE001 - the process may be gone
            pass

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self._sample()

    @property
    def peak_mib(self) -> float:
        return self.peak / MiB

    def now_mib(self) -> float:
        return self.proc.memory_info().rss / MiB


def start_stcloud(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "STCLOUD_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for var in ("STCLOUD_ADMIN_TOKEN", "STCLOUD_PUBLIC_URL", "STCLOUD_DATABASE_URL"):
        env.pop(var, None)
    log = open(home / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "stcloud.cli", "serve", "--port", str(port), "--no-scheduler"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    return proc, url


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def make_file(path: Path, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(8 * MiB, left))
            sha.update(block)
            fh.write(block)
            left -= len(block)
    return sha.hexdigest()


def sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 * MiB):
            sha.update(block)
    return sha.hexdigest()


def client(endpoint: str, key: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(connect_timeout=10, read_timeout=300, retries={"max_attempts": 3}))


def transfer(c, bucket: str, src: Path, dst: Path, digest: str, pid: int) -> dict:
    size = src.stat().st_size
    with RssSampler(pid) as rss:
        t0 = time.perf_counter()
        c.upload_file(str(src), bucket, "bench/object.bin")
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        c.download_file(bucket, "bench/object.bin", str(dst))
        down = time.perf_counter() - t0
    ok = sha256_of(dst) == digest
    dst.unlink(missing_ok=True)
    c.delete_object(Bucket=bucket, Key="bench/object.bin")
    return {"upload_s": up, "download_s": down, "upload_mib_s": size / MiB / up, "download_mib_s": size / MiB / down,
            "peak_rss_mib": rss.peak_mib, "intact": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench s3", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256, help="object size for the comparison (MiB)")
    p.add_argument("--big-mib", type=int, default=1024, help="size of the RSS upload (MiB); 0 skips it")
    p.add_argument("--repeat", type=int, default=3, help="runs per server; the median is reported")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = p.parse_args(argv)

    import requests

    work = Path(tempfile.mkdtemp(prefix="s3bench-"))
    home = work / "home"
    home.mkdir()
    procs: list[subprocess.Popen] = []
    results: dict = {"size_mib": args.size_mib}
    status = 0
    try:
        ours, ours_url = start_stcloud(home)
        procs.append(ours)
        moto, moto_url = start_moto()
        procs.append(moto)
        key = requests.post(ours_url + "/api/cloud/storage/credentials", json={"bucket": "bench", "ttl_seconds": 7200},
                            timeout=10).json()
        targets = {
            "stcloud": (client(key["endpoint_url"], key["access_key_id"], key["secret_access_key"]), ours.pid),
            "moto": (client(moto_url, "testing", "testing"), moto.pid),
        }
        targets["moto"][0].create_bucket(Bucket="bench")
        src = work / "object.bin"
        digest = make_file(src, args.size_mib * MiB)
        print(f"{args.size_mib} MiB object, stock boto3 (upload_file / download_file), loopback, "
              f"median of {max(1, args.repeat)} runs")
        for c, _pid in targets.values():  # warm-up: connections, imports, first requests
            c.put_object(Bucket="bench", Key="warmup", Body=b"x" * 1024)
            c.get_object(Bucket="bench", Key="warmup")["Body"].read()
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(max(1, args.repeat)):  # interleaved, so both see the same machine state
            for name, (c, pid) in targets.items():
                runs[name].append(transfer(c, "bench", src, work / f"down-{name}.bin", digest, pid))
        for name in targets:
            rs = runs[name]
            results[name] = {
                "upload_mib_s": statistics.median(r["upload_mib_s"] for r in rs),
                "download_mib_s": statistics.median(r["download_mib_s"] for r in rs),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                "intact": all(r["intact"] for r in rs), "runs": rs}
            r = results[name]
            print(f"  {name:8s} upload {r['upload_mib_s']:7.1f} MiB/s  download {r['download_mib_s']:7.1f} MiB/s  "
                  f"peak RSS {r['peak_rss_mib']:6.1f} MiB  intact={r['intact']}")
            if not r["intact"]:
                status = 1
        s, m = results["stcloud"], results["moto"]
        results["ratio_upload"] = s["upload_mib_s"] / m["upload_mib_s"]
        results["ratio_download"] = s["download_mib_s"] / m["download_mib_s"]
        print(f"  ratio stcloud/moto: upload {results['ratio_upload']:.2f}x  download {results['ratio_download']:.2f}x")
        src.unlink()
        stop(moto)
        procs.remove(moto)

        if args.big_mib:
            big = work / "big.bin"
            make_file(big, args.big_mib * MiB)
            c, pid = targets["stcloud"]
            sampler = RssSampler(pid)
            before = sampler.now_mib()
            with sampler as rss:
                t0 = time.perf_counter()
                c.upload_file(str(big), "bench", "bench/big.bin")
                elapsed = time.perf_counter() - t0
            head = c.head_object(Bucket="bench", Key="bench/big.bin")
            big.unlink()
            c.delete_object(Bucket="bench", Key="bench/big.bin")
            results["big"] = {"size_mib": args.big_mib, "upload_s": elapsed, "upload_mib_s": args.big_mib / elapsed,
                              "rss_before_mib": before, "peak_rss_mib": rss.peak_mib,
                              "stored_bytes": head["ContentLength"]}
            verdict = "OK" if rss.peak_mib < RSS_LIMIT_MIB else f"OVER the {RSS_LIMIT_MIB} MiB limit"
            print(f"{args.big_mib} MiB upload to stcloud: {args.big_mib / elapsed:.1f} MiB/s, server RSS "
                  f"{before:.1f} MiB before, peak {rss.peak_mib:.1f} MiB ({verdict})")
            if rss.peak_mib >= RSS_LIMIT_MIB or head["ContentLength"] != args.big_mib * MiB:
                status = 1
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
