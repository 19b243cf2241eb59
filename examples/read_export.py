"""Read what mtl-export wrote, without mtl_cli: the weights (safetensors) and the ONNX graph.

    mtl-export <run dir>                         # writes <run dir>/export/best/
    python examples/read_export.py <run dir>/export/best examples/images/shape_0.png

Needs safetensors, onnxruntime, numpy and Pillow (pip install "mtl-cli[export]")."""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image
from safetensors.numpy import load_file

folder, image_file = sys.argv[1], sys.argv[2]
weights = load_file(f"{folder}/model.safetensors")  # name -> numpy array; no pickle
print(len(weights), "tensors,", sum(w.size for w in weights.values()), "values")
spec = json.load(open(f"{folder}/export.json"))  # the inputs and outputs of the graph
print("inputs:", [(i["name"], i["shape"]) for i in spec["inputs"]])
# as the shapes data source prepares an image: RGB values / 255, channels first, a batch of one
image = np.asarray(Image.open(image_file).convert("RGB"), np.float32) / 255
session = ort.InferenceSession(f"{folder}/model.onnx")
outputs = session.run(None, {spec["inputs"][0]["name"]: image.transpose(2, 0, 1)[None]})
for out, value in zip(spec["outputs"], outputs):
    print(out["task"], out["kind"], value.shape)
print("shape: class", int(outputs[0].argmax()))
