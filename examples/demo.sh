#!/usr/bin/env bash
# End-to-end demo on the embedded registry: train, keygen, package, verify,
# publish, install, predict. Everything lives under ./demo (PACKAGER_HOME too).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"
DEMO=${DEMO_DIR:-$PWD/demo}
rm -rf "$DEMO"
mkdir -p "$DEMO"
export PACKAGER_HOME="$DEMO/home"
export PACKAGER_KEY_PASSWORD=${PACKAGER_KEY_PASSWORD:-demo-password}

step() { printf '\n\033[1m== %s\033[0m\n' "$1"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "1. Train a scikit-learn model (build side)"
run python examples/train_iris.py "$DEMO"

step "2. Make a signing key pair (cosign-compatible)"
run packager keygen -o "$DEMO/keys"

step "3. Package: convert to ONNX, check parity, record test vectors, sign"
run packager package "$DEMO/model.joblib" --name iris-classifier --version 1.0.0 \
    --sample "$DEMO/sample.csv" --key "$DEMO/keys/cosign.key" -o "$DEMO/dist" \
    --license Apache-2.0 --param C=1.0
run packager inspect "$DEMO/dist/iris-classifier-1.0.0"

step "4. Verify the signature and every digest"
run packager verify "$DEMO/dist/iris-classifier-1.0.0" --key "$DEMO/keys/cosign.pub"

step "5. Publish to the embedded registry (\$PACKAGER_HOME/registry)"
run packager publish "$DEMO/dist/iris-classifier-1.0.0" --key "$DEMO/keys/cosign.pub"
run packager search

step "6. Install on the instance: verify, smoke-test, switch atomically"
run packager install iris-classifier@1.0.0 --key "$DEMO/keys/cosign.pub"
run packager list

step "7. Predict with the installed model (no scikit-learn needed here)"
run packager predict iris-classifier --input "$DEMO/input.csv"
printf '$ python -c "import packager; ..."\n'
python - <<'PY'
import packager
model = packager.load("iris-classifier")
out = model.predict([[5.1, 3.5, 1.4, 0.2]])
probs = [round(float(p), 3) for p in out["probabilities"][0]]
print(f"{model!r} label={out['label'].tolist()} probabilities={probs}")
PY

step "8. The audit log"
run packager log

printf '\nDone. State is in %s; remove it with: rm -rf %s\n' "$PACKAGER_HOME" "$DEMO"
