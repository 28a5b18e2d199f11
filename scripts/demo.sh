#!/usr/bin/env bash
# The quick-start demo: start the emulator, mirror examples/sample into a
# container, change the tree, and sync again, showing what each pass did; then
# play the model writing a file in the container and bring it home.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${VENV:-.venv}/bin
work=$(mktemp -d)
emulator_pid=""
cleanup() {
    [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/cntr-sync" emulator --port 0 --control >"$work/emulator.log" 2>&1 &
emulator_pid=$!
url=""
for _ in $(seq 100); do  # up to 10 s
    url=$(grep -o 'http://[^ ]*' "$work/emulator.log" || true)
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "the emulator did not start:" >&2; cat "$work/emulator.log" >&2; exit 1; }

export OPENAI_BASE_URL=$url OPENAI_API_KEY=sk-demo-not-a-real-key
cp -r examples/sample "$work/sample"
sync() { "$bin/cntr-sync" sync "$work/sample" --container demo --state-dir "$work/state" "$@"; }
step() { printf '\n== %s\n' "$*"; }

echo "emulator: $url (a local server of the Containers API; no API key needed)"
step "cntr-sync sync sample --container demo   (cold: creates the container, uploads all)"
sync
step "cntr-sync ls --container demo"
"$bin/cntr-sync" ls --container demo
step "edit a file, add one, delete one, then: cntr-sync sync --dry-run"
echo "- and sync it" >>"$work/sample/notes/meeting notes – ünïcode.md"
echo "print('new')" >"$work/sample/new_script.py"
rm "$work/sample/notes/empty.txt"
sync --dry-run
step "cntr-sync sync   (only the changes travel)"
sync
step "cntr-sync sync --json   (nothing changed: one listing request)"
sync --json
step "the model writes results/summary.md in the container; cntr-sync sync --direction both"
"$bin/python" - "$url" <<'PY'
import sys

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import EmulatorControl

with ContainersClient("sk-demo-not-a-real-key", base_url=sys.argv[1]) as client:
    (container,) = client.iter_containers(name="demo")
EmulatorControl(sys.argv[1]).add_assistant_file(
    container.id, "/mnt/data/results/summary.md", b"# Summary\n42 rows\n"
)
PY
sync --direction both
echo "--- $work/sample/results/summary.md:"
cat "$work/sample/results/summary.md"
step "done: exit code $?"
