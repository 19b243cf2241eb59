"""Write the example inputs of the README (run from anywhere; the files go next to this script):

- ``houses.csv``: 400 made-up houses for ``experiment=tabular``: four features (area_m2, rooms,
  age_years, distance_km), a price in millions (regression) and a kind (flat, house or villa:
  classification). A few price cells are empty: missing labels.
- ``new_houses.csv``: three more houses without targets, for ``mtl-predict`` on a tabular run.
- ``images/``: four 32x32 PNG images drawn by the shapes source (data seed 123, which no default
  split uses), for ``mtl-predict`` on a run of the default experiment; ``images.csv`` holds their
  true labels.

The files are committed; ``python examples/make_examples.py --check`` says whether they are what
this script writes (tests/test_docs_truth.py runs it).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("flat", "house", "villa")
SHAPE_NAMES = ("circle", "square", "triangle", "cross")


def houses(n: int, seed: int, targets: bool = True) -> str:
    """A CSV of ``n`` houses; price = f(area, rooms, age, distance, kind) + noise, in millions (a
    target of order 1: the csv source does not rescale targets)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    kind = rng.choice(len(KINDS), size=n, p=[0.45, 0.4, 0.15])
    area = np.where(
        kind == 0, rng.normal(70, 20, n), np.where(kind == 1, rng.normal(140, 30, n), rng.normal(260, 50, n))
    )
    area = np.clip(area, 25, 450)
    rooms = np.clip(np.round(area / 30 + rng.normal(0, 0.7, n)), 1, 12)
    age = np.clip(rng.gamma(2.0, 15.0, n), 0, 120)
    dist = np.clip(rng.exponential(8.0, n), 0.2, 60)
    price = 2.2 * area + 9 * rooms - 0.8 * age - 4.5 * dist + 60 * kind + rng.normal(0, 25, n) + 40
    missing = rng.random(n) < 0.05  # 5% without a price: missing labels
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["area_m2", "rooms", "age_years", "distance_km", *(["price", "kind"] if targets else [])])
    for i in range(n):
        row = [f"{area[i]:.1f}", f"{int(rooms[i])}", f"{age[i]:.1f}", f"{dist[i]:.2f}"]
        if targets:
            row += ["" if missing[i] else f"{max(price[i], 20.0) / 1000:.3f}", KINDS[kind[i]]]
        w.writerow(row)
    return buf.getvalue()


def images(folder: Path) -> dict[str, bytes]:
    """PNG files of four shapes images (the source's own drawing) and images.csv, their labels."""
    import numpy as np
    from PIL import Image

    from mtl_cli.data.sources.shapes import generate

    data = generate(4, image_size=32, max_objects=3, noise=0.05, seed=123)
    out: dict[str, bytes] = {}
    labels = io.StringIO()
    w = csv.writer(labels, lineterminator="\n")
    w.writerow(["image", "shape", "size", "present"])
    for i in range(4):
        arr = (data["image"][i].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, format="PNG", optimize=False, compress_level=9)
        name = f"shape_{i}.png"
        out[f"{folder.name}/{name}"] = buf.getvalue()
        present = " ".join(n for n, p in zip(SHAPE_NAMES, data["present"][i].tolist()) if p)
        w.writerow([name, SHAPE_NAMES[int(data["shape"][i])], f"{float(data['size'][i]):.4f}", present])
    out[f"{folder.name}.csv"] = labels.getvalue().encode()
    return out


def files() -> dict[str, bytes]:
    """Every example file: its path relative to examples/ and its bytes."""
    out = {"houses.csv": houses(400, seed=0).encode(), "new_houses.csv": houses(3, seed=1, targets=False).encode()}
    out.update(images(HERE / "images"))
    return out


def _pixels(data: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def stale() -> list[str]:
    """The example files that differ from what this script writes (PNG files by their pixels)."""
    bad = []
    for rel, data in files().items():
        path = HERE / rel
        if not path.is_file():
            bad.append(f"{rel}: missing")
        elif rel.endswith(".png"):
            if not (_pixels(path.read_bytes()) == _pixels(data)).all():
                bad.append(f"{rel}: other pixels")
        elif path.read_bytes() != data:
            bad.append(f"{rel}: other content")
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a committed file differs; write nothing")
    args = p.parse_args(argv)
    if args.check:
        bad = stale()
        for line in bad:
            print(line)
        return 1 if bad else 0
    for rel, data in files().items():
        path = HERE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
