"""Where a long input should leave the int4 kernel: time one int4 linear at Qwen2.5-VL-7B's MLP shapes through the
kernel (tinygemm on CUDA, torch's int4pack on CPU) and through the weight dequantized once plus a dense bf16 matmul,
for 1 to 4096 input rows. ``WeightOnlyInt4Linear`` switches at ``DENSE_FROM_ROWS[kernel]`` rows; this is the
measurement behind that number.

    python benchmarks/int4_prefill_rows.py --device cuda
    python benchmarks/int4_prefill_rows.py --device cpu --rows 1 64 256 512 1024

Writes ``benchmarks/results/int4_prefill_rows.json`` (merged under the device's name) and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_decode import device_name, synchronize  # noqa: E402

SHAPES = {"mlp up (3584 -> 18944)": (3584, 18944), "mlp down (18944 -> 3584)": (18944, 3584)}


def best_ms(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (compiles the fused dequantization once)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def measure(device: str, rows: list[int], repeats: int) -> dict:
    """Both paths of ``WeightOnlyInt4Linear.forward`` at every row count, chosen by moving its switch."""
    import torch

    from stvgr1_edge.backends import int4

    out: dict = {"shapes": {}}
    for name, (in_features, out_features) in SHAPES.items():
        torch.manual_seed(0)
        weight = torch.randn(out_features, in_features, device=device) * 0.02
        codes, scales, zeros = int4.quantize_weight_int4(weight, 128)
        layer = int4.WeightOnlyInt4Linear(in_features, out_features, codes, scales, zeros, None, 128, torch.bfloat16)
        switch = int4.DENSE_FROM_ROWS.get(layer.kernel)
        points = []
        for m in rows:
            x = torch.randn(m, in_features, device=device, dtype=torch.bfloat16)
            timed = {}
            for path, from_rows in (("kernel", m + 1), ("dense", 1)):
                int4.DENSE_FROM_ROWS[layer.kernel] = from_rows
                try:
                    timed[path] = best_ms(lambda: layer(x), device, repeats)
                finally:
                    if switch is None:
                        int4.DENSE_FROM_ROWS.pop(layer.kernel)
                    else:
                        int4.DENSE_FROM_ROWS[layer.kernel] = switch
            points.append({"rows": m, "kernel_ms": round(timed["kernel"], 4), "dense_ms": round(timed["dense"], 4)})
            print(f"{name} rows {m}: kernel {timed['kernel']:.3f} ms, dequantize + dense {timed['dense']:.3f} ms")
        out["shapes"][name] = {"kernel": layer.kernel, "points": points}
    return out


def plot(entries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stvgr1_edge.backends.int4 import DENSE_FROM_ROWS

    keys = sorted(entries)
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, shape in entries[key]["shapes"].items():
            rows = [p["rows"] for p in shape["points"]]
            (line,) = ax.plot(rows, [p["kernel_ms"] for p in shape["points"]], marker="o", label=f"{name}: kernel")
            ax.plot(
                rows,
                [p["dense_ms"] for p in shape["points"]],
                marker="s",
                ls="--",
                color=line.get_color(),
                label=f"{name}: dequantize + dense",
            )
        kernel = next(iter(entries[key]["shapes"].values()))["kernel"]
        if kernel in DENSE_FROM_ROWS:
            ax.axvline(DENSE_FROM_ROWS[kernel], color="0.5", lw=0.8, label=f"DENSE_FROM_ROWS[{kernel!r}]")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("input rows")
        ax.set_ylabel("ms (best of repeats)")
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 8, 32, 64, 128, 256, 512, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int4_prefill_rows.json")
    args = parser.parse_args(argv)
    import torch

    from stvgr1_edge.errors import write_json_atomic

    key = f"{device_name(args.device)}, torch {torch.__version__}"
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[key] = measure(args.device, args.rows, args.repeats)
    write_json_atomic(args.out, results, indent=1)
    plot(results, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
