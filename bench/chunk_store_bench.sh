#!/usr/bin/env bash
# Chunk store vs fio on the same disk (issue 4). Run as root (drops the page cache).
#
#   bench/chunk_store_bench.sh [runs]        (default 3 runs; BUILD=… WORK=… override paths)
#
# Per run:
#   1. fio --ioengine=io_uring sequential write of 2 GiB (bs=1M, direct=0, --end_fsync=1)
#   2. chunk store put of the 2 GiB tree (scan_tree + store_layer, fdatasync + synced index);
#      the tree is read from the page cache (warmed with cat), like fio writes from memory
#   3. READS times (default 3), alternating: drop caches, fio sequential read of its file (bs=1M,
#      qd 16, buffered); drop caches, chunk store read of every chunk (O_DIRECT, verified)
#   4. drop caches, materialise the layer into a new dir (packs read cold with O_DIRECT and
#      verified; files written into the page cache, like fio's read lands in memory)
#   5. the same with the packs read through the page cache (direct_reads = false), for comparison
# The table compares medians over all runs (reads: over all RUNS x READS pairs).
# MB/s are 10^6 bytes per second of file content. The disk is mounted with `discard`: after
# deleting gigabytes the trims slow the next measurement down, so every step starts after
# `sync; sleep $QUIET` (default 8 s) and a cache drop where noted.
set -euo pipefail

RUNS=${1:-3}
BUILD=${BUILD:-$(cd "$(dirname "$0")/.." && pwd)/build}
BIN=${BIN:-$BUILD/bench/chunk_store_bench}
WORK=${WORK:-/var/tmp/shoal-chunk-bench}
BS=1M
QUIET=${QUIET:-8}

[ -x "$BIN" ] || { echo "build $BIN first: cmake --build $BUILD --target chunk_store_bench" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (drop_caches)" >&2; exit 1; }

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
quiet() { sync; sleep "$QUIET"; }

rm -rf "$WORK"
mkdir -p "$WORK/tree"
# The tree: 7 x 256 MiB + 24 x 8 MiB + 4096 x 16 KiB = 2048 MiB of random (non-deduplicating) data.
python3 - "$WORK/tree" <<'PY'
import os, sys
root = sys.argv[1]
def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
for i in range(7):
    write(f"{root}/large/blob{i}.bin", 256 << 20)
for i in range(24):
    write(f"{root}/medium/lib{i}.so", 8 << 20)
for i in range(4096):
    write(f"{root}/small/d{i % 64}/f{i}.py", 16 << 10)
PY
sync
TREE_BYTES=$(du -sb --apparent-size "$WORK/tree" | cut -f1)
echo "tree: $TREE_BYTES bytes in $(find "$WORK/tree" -type f | wc -l) files"

fio_bw() { # fio json on stdin, "read"|"write" -> MB/s
  python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.1f" % (j["jobs"][0][sys.argv[1]]["bw_bytes"]/1e6))' "$1"
}

# Reads are interleaved: fio and the store alternate, READS times each per run (a cache drop
# before every read), because this VM's disk drifts by up to 2x within minutes; one fio read and
# one store read minutes apart compare the drift more than the two readers.
READS=${READS:-3}
declare -a FW FR CP CR CM CD
for run in $(seq 1 "$RUNS"); do
  rm -f "$WORK/fio.dat"; quiet
  fw=$(fio --name=seqwrite --ioengine=io_uring --rw=write --bs=$BS --size=2G --iodepth=16 \
           --direct=0 --end_fsync=1 --filename="$WORK/fio.dat" --output-format=json | fio_bw write)
  rm -rf "$WORK/store" "$WORK/out"; quiet
  find "$WORK/tree" -type f -exec cat {} + > /dev/null   # source in the page cache
  cp=$("$BIN" put "$WORK/tree" "$WORK/store" "$WORK/digest" | awk '/^put /{sub("mb_per_s=","",$4); print $4}')
  FW+=("$fw"); CP+=("$cp")
  echo "run $run: fio write $fw MB/s, put $cp MB/s"
  for k in $(seq 1 "$READS"); do
    quiet; drop_caches
    fr=$(fio --name=seqread --ioengine=io_uring --rw=read --bs=$BS --size=2G --iodepth=16 \
             --direct=0 --filename="$WORK/fio.dat" --output-format=json | fio_bw read)
    quiet; drop_caches
    cr=$("$BIN" read "$WORK/store" "$WORK/digest" | awk '/^read /{sub("mb_per_s=","",$4); print $4}')
    FR+=("$fr"); CR+=("$cr")
    echo "run $run read $k: fio read $fr MB/s, store read $cr MB/s"
  done
  quiet; drop_caches
  cm=$("$BIN" materialise "$WORK/store" "$WORK/digest" "$WORK/out" | awk '/^materialise /{sub("mb_per_s=","",$4); print $4}')
  cmp -s "$WORK/tree/large/blob3.bin" "$WORK/out/large/blob3.bin" || { echo "materialised tree differs" >&2; exit 1; }
  rm -rf "$WORK/out"; quiet; drop_caches
  cd_=$(SHOAL_BENCH_BUFFERED_READS=1 "$BIN" materialise "$WORK/store" "$WORK/digest" "$WORK/out" | awk '/^materialise /{sub("mb_per_s=","",$4); print $4}')
  cmp -s "$WORK/tree/large/blob3.bin" "$WORK/out/large/blob3.bin" || { echo "materialised tree differs (buffered reads)" >&2; exit 1; }
  rm -rf "$WORK/out" "$WORK/fio.dat"
  CM+=("$cm"); CD+=("$cd_")
  echo "run $run: materialise $cm MB/s, materialise with buffered pack reads $cd_ MB/s"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mfw=$(median "${FW[@]}"); mfr=$(median "${FR[@]}"); mcp=$(median "${CP[@]}"); mcr=$(median "${CR[@]}"); mcm=$(median "${CM[@]}"); mcd=$(median "${CD[@]}")
echo
echo "| operation (2 GiB) | fio io_uring MB/s | chunk store MB/s | ratio | runs (fio / store) |"
echo "|---|---|---|---|---|"
printf '| sequential write vs put (scan_tree) | %s | %s | %.2f | %s / %s |\n' "$mfw" "$mcp" \
  "$(awk -v a="$mcp" -v b="$mfw" 'BEGIN { print a / b }')" "${FW[*]}" "${CP[*]}"
printf '| sequential read vs read (every chunk, verified, 32 MiB batches) | %s | %s | %.2f | %s / %s |\n' "$mfr" "$mcr" \
  "$(awk -v a="$mcr" -v b="$mfr" 'BEGIN { print a / b }')" "${FR[*]}" "${CR[*]}"
printf '| sequential read vs materialise | %s | %s | %.2f | %s / %s |\n' "$mfr" "$mcm" \
  "$(awk -v a="$mcm" -v b="$mfr" 'BEGIN { print a / b }')" "${FR[*]}" "${CM[*]}"
printf '| sequential read vs materialise, buffered pack reads | %s | %s | %.2f | %s / %s |\n' "$mfr" "$mcd" \
  "$(awk -v a="$mcd" -v b="$mfr" 'BEGIN { print a / b }')" "${FR[*]}" "${CD[*]}"
rm -rf "$WORK"
