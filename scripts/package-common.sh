# What scripts/deb.sh and scripts/release.sh share: their --bin-dir and
# --out flags, the binaries a package ships, and a release build of them
# when no --bin-dir is given. Sourced by those scripts (with their
# arguments), not run: expects $script (its own name, for messages) and
# $out (its default output directory); sets $bin_dir, $out, $daemons, $tools.

daemons="nsqd nsqlookupd nsqadmin"
tools="to_nsq nsq_tail nsq_stat nsq_to_file nsq_to_http nsq_to_nsq nsq-job"
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --bin-dir=*) bin_dir=${1#*=}; shift ;;
        --out) out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        *) echo "usage: scripts/$script [--bin-dir DIR] [--out DIR]" >&2; exit 2 ;;
    esac
done
if [ -z "$bin_dir" ]; then
    cargo build --release --bins -p nsqd -p nsqlookupd -p nsqadmin -p nsq-tools >&2
    bin_dir=target/release
fi
for b in $daemons $tools; do
    [ -x "$bin_dir/$b" ] || { echo "scripts/$script: $bin_dir/$b missing (cargo build --bins first)" >&2; exit 1; }
done
