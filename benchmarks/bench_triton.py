"""Throughput of a stream model behind Triton with 1, 4 and 8 concurrent camera streams.

Writes the portable repository of ``--artifact`` (Triton's Python backend running
edgevid.runtime on ONNX Runtime), starts a local CPU tritonserver (nvidia-pytriton's
binary) on loopback ports, and streams ``--steps`` frames per stream from N client threads
at once, each its own sequence. Reports, per N, measured in this run: frames/s over all
streams, p50/p90 latency of one step as the client sees it, and from the server's own
statistics endpoint the executions, the mean batch (requests per execution: how many
sequences the batcher put together) and the mean queue and compute time per request.

    python benchmarks/bench_triton.py --artifact exports/tsm --streams 1,4,8 --steps 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _frames(manifest, count: int) -> np.ndarray:
    from edgevid.runtime.preprocess import preprocess_frame

    rng = np.random.default_rng(0)
    return np.stack([preprocess_frame(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), manifest.preprocess)
                     for _ in range(count)])


def _stats(client, name: str) -> dict:
    stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    inf = stats.get("inference_stats", {})

    def ns(key: str) -> float:
        return float(inf.get(key, {}).get("ns", 0))

    return {"inferences": int(stats.get("inference_count", 0)), "executions": int(stats.get("execution_count", 0)),
            "queue_ns": ns("queue"), "compute_ns": ns("compute_infer"), "success": int(inf.get("success", {}).get("count", 0))}


def run_streams(url: str, name: str, frames: np.ndarray, streams: int) -> dict:
    """``streams`` concurrent sequences of ``len(frames)`` steps; client-side timings."""
    from edgevid.runtime.remote import connect

    latencies: list[list[float]] = [[] for _ in range(streams)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(streams + 1)

    def one(i: int) -> None:
        try:
            runner = connect(url, name)
            s = runner.open_stream()
            barrier.wait()
            for f in frames:
                t0 = time.perf_counter()
                s.step(f[None])
                latencies[i].append((time.perf_counter() - t0) * 1e3)
            s.close()
            runner.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    all_ms = np.concatenate([np.asarray(x) for x in latencies])
    return {"streams": streams, "frames_per_s": len(all_ms) / seconds, "p50_ms": float(np.percentile(all_ms, 50)),
            "p90_ms": float(np.percentile(all_ms, 90))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", required=True, help="a stream-mode artifact")
    p.add_argument("--streams", default="1,4,8", help="concurrent streams to measure (default 1,4,8)")
    p.add_argument("--steps", type=int, default=200, help="frames per stream (default 200)")
    p.add_argument("--work", help="folder for the repository (default: a temp folder)")
    args = p.parse_args(argv)

    import tritonclient.grpc as grpcclient

    from edgevid.export.triton import write_repository
    from edgevid.export.triton_server import LocalServer
    from edgevid.runtime import open_artifact

    counts = [int(x) for x in args.streams.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-triton-"))
    repo = work / "repo"
    write_repository(args.artifact, repo, flavour="portable", name="bench", max_batch=max(counts), force=True)
    frames = _frames(open_artifact(args.artifact).manifest, args.steps)
    rows = []
    with LocalServer(repo) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        run_streams(server.grpc_url, "bench", frames[:4], 1)  # warm-up: the first requests load the model's pools
        for n in counts:
            before = _stats(client, "bench")
            row = run_streams(server.grpc_url, "bench", frames, n)
            after = _stats(client, "bench")
            d = {k: after[k] - before[k] for k in after}
            row["executions"] = d["executions"]
            row["batch"] = d["inferences"] / max(d["executions"], 1)
            row["queue_ms"] = d["queue_ns"] / max(d["success"], 1) / 1e6
            row["compute_ms"] = d["compute_ns"] / max(d["success"], 1) / 1e6
            rows.append(row)
        client.close()
    print(f"Triton portable model ({args.artifact}), {args.steps} steps per stream, measured in one run:")
    print("| streams | frames/s | p50 ms / step | p90 ms / step | server executions | mean batch | queue ms | compute ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['streams']} | {r['frames_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['executions']} | "
              f"{r['batch']:.2f} | {r['queue_ms']:.2f} | {r['compute_ms']:.2f} |")
    if len(rows) > 1:
        print(f"throughput {rows[-1]['streams']} streams / 1 stream: {rows[-1]['frames_per_s'] / rows[0]['frames_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
