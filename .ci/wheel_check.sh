#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it into a fresh venv and run the CLI from
# outside the checkout. A module or config file left out of the wheel fails here, not on a user's machine.
# The fresh venv takes its dependencies from the dev venv (a .pth after its own site-packages), so nothing
# is downloaded twice; selfsup itself is imported from the wheel (checked).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$work"/dist/selfsup-*.whl
site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
site_of .venv/bin/python > "$(site_of "$work/venv/bin/python")/dev-dependencies.pth"
cd "$work"
venv/bin/python -c 'import pathlib, selfsup; p = pathlib.Path(selfsup.__file__).resolve()
assert "venv" in p.parts, f"selfsup was imported from {p}, not from the installed wheel"'
venv/bin/selfsup --version
venv/bin/selfsup config method=dino_imagenet data=stl10 > /dev/null
venv/bin/selfsup pretrain data=synthetic data.subset=64 trainer.batch_size=32 trainer.epochs=1 \
    method.proj_hidden_dim=32 device=cpu trainer.progress=false output_dir="$work/run"
test -s "$work/run/checkpoints/last.pt"
venv/bin/python -c 'from selfsup.study import load_study, study_names
assert len(study_names()) >= 5, study_names()
[load_study(name) for name in study_names()]'  # the study presets ship too
echo "wheel check: $(ls "$work"/dist) installs and pretrains"
