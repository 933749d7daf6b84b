#!/usr/bin/env bash
# Receiving a clinical-size study over DICOM: DCMTK's storescu sends every instance of a
# `tracerd synth --size clinical --format dicom` study over one association, first to DCMTK's
# storescp (the peer: writes each file, no fsync) and then to tracerd's listener (the daemon:
# each instance fsynced and renamed into place before it is acknowledged), on this machine.
# Prints instances per second for both and their ratio. Needs dcmtk and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="$PWD/target/release/tracerd"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
seed="${SEED:-100000}"
"$bin" synth --out "$work/study" --seed "$seed" --size clinical --format dicom >/dev/null
# the DICOM files only (the export also holds labels.json and a README)
find "$work/study" -type f -print0 | xargs -0 python3 -c '
import sys
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        if f.read(132)[128:] == b"DICM":
            print(p)' | sort > "$work/files"
n=$(wc -l < "$work/files")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

send() { # port called -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  xargs -a "$work/files" storescu -aec "$2" -aet BENCH 127.0.0.1 "$1"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

mkdir -p "$work/storescp"
p=$(port)
storescp -od "$work/storescp" "$p" & scp=$!
sleep 1
peer_s=$(send "$p" ANY)
kill "$scp"
stored=$(find "$work/storescp" -type f | wc -l)

mkdir -p "$work/spool"/{inbox,work,outbox,failed,archive}
p=$(port)
cat > "$work/spool/tracerd.toml" <<TOML
[paths]
inbox = "inbox"
work = "work"
outbox = "outbox"
failed = "failed"
archive = "archive"
[watch]
settle_seconds = 3600
min_free_mib = 16
[metrics]
enabled = false
[dicom_listener]
enabled = true
listen = "127.0.0.1:$p"
allowed_calling_ae_titles = ["BENCH"]
TOML
"$bin" run --config "$work/spool/tracerd.toml" > "$work/daemon.log" 2>&1 & daemon=$!
for _ in $(seq 100); do grep -q "DICOM listener ready" "$work/daemon.log" && break; sleep 0.2; done
tracerd_s=$(send "$p" TRACERD)
kill "$daemon"
received=$(find "$work/spool/inbox" -name '*.dcm' | wc -l)
[ "$received" -eq 0 ] && received=$(find "$work/spool" -name '*.dcm' | wc -l)

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(df -T "$work" | awk 'NR==2 {print $2}') filesystem"
printf 'study: %d instances (seed %s)\n' "$n" "$seed"
printf 'storescp: %d stored in %.2f s = %.1f instances/s\n' "$stored" "$peer_s" "$(echo "$stored / $peer_s" | bc -l)"
printf 'tracerd:  %d stored in %.2f s = %.1f instances/s\n' "$received" "$tracerd_s" "$(echo "$received / $tracerd_s" | bc -l)"
printf 'tracerd / storescp throughput: %.2f\n' "$(echo "($received / $tracerd_s) / ($stored / $peer_s)" | bc -l)"
