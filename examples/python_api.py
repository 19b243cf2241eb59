"""The Python API as a notebook would use it: python examples/python_api.py (from the folder that
holds examples/; it trains the default experiment for 3 epochs into outputs/notebook)."""

from mtl_cli import compose, evaluate, predict, train
from mtl_cli.errors import ConfigError

try:
    compose(["trainer.max_epoch=3"])
except ConfigError as e:
    print(e.render())  # what mtl-train prints; e.problems holds each problem

cfg = compose(["trainer.max_epochs=3", "run_dir=outputs/notebook", "overwrite=true"])
result = train(cfg)  # prints the end-of-run table, as mtl-train does
print("test accuracy of shape:", round(result.test["shape"]["accuracy"], 4))  # at the selected epoch
val = evaluate(result, split="val", checkpoint="last")  # as mtl-eval, also written to eval/
print("val size/mae at last.pt:", round(val["metrics"]["size"]["mae"], 4))
records = predict(result, "examples/images/")  # as mtl-predict: one record per input
for r in records:
    print(r["input"].rsplit("/", 1)[-1], r["shape"]["label"], round(r["shape"]["probs"][r["shape"]["label"]], 2))
