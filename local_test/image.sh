#!/usr/bin/env bash
# Build and run the serving image on this machine: with Docker when an engine
# answers (`docker info`), else with buildah (build) and podman (run).
#
#   local_test/image.sh setup                     install buildah, podman, runc, debootstrap (apt) when there is no Docker engine
#   local_test/image.sh build                     build the CPU variant of the image (IMAGE, default whisper-sagemaker:cpu)
#   local_test/image.sh run [MODEL_DIR]           run its `serve` on 127.0.0.1:PORT (8080) in the foreground; Ctrl-C stops it
#   local_test/image.sh start NAME [MODEL_DIR]    the same, detached, as container NAME
#   local_test/image.sh stop NAME                 SIGTERM, as SageMaker does (30 s grace); prints "stopped NAME exit=CODE seconds=S"
#   local_test/image.sh logs NAME                 the container's output
#   local_test/image.sh state NAME                its state: running, exited...
#   local_test/image.sh exec NAME COMMAND...      run COMMAND inside container NAME, as its default user (root)
#   local_test/image.sh labels                    the image's labels, as JSON
#   local_test/image.sh engine                    print docker or podman
#
# MODEL_DIR is an extracted model.tar.gz: it is mounted read-only at /opt/ml/model,
# where SageMaker puts it. Without it the image serves the embedded tiny.en.
#
# The CPU variant is the repository's own Dockerfile with nothing changed but
# build arguments (tests/test_image.py builds and checks it):
#   CUDA_IMAGE     a Debian bookworm (Python 3.11) made here with debootstrap and imported
#                  (BASE_IMAGE, default whisper-base:bookworm), carrying the host's CA bundle
#                  and PIP_CERT, so that pip works behind a TLS proxy the host trusts
#   TORCH_INDEX    a local simple index holding the CPU torch wheel and its dependencies,
#                  made with `pip download` (the wheel comes from PIP_FIND_LINKS or an index
#                  pip already knows); set TORCH_INDEX yourself to use another, e.g.
#                  https://download.pytorch.org/whl/cpu
#   TORCH_VERSION  2.13.0 (TORCH_VERSION), the version the test suite runs
# The real CUDA image is built by build_and_push.sh (Docker with BuildKit).
#
# Podman notes (measured on Debian bookworm, cgroups v1/hybrid): crun fails
# ("cgroups in hybrid mode not supported"), so builds use --isolation chroot and
# runs --runtime runc; podman needs explicit ulimits or setrlimit fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${IMAGE:-whisper-sagemaker:cpu}"
base="${BASE_IMAGE:-whisper-base:bookworm}"
suite=bookworm
python_version=3.11 # Debian bookworm's python3: the torch wheel must match it
torch_version="${TORCH_VERSION:-2.13.0}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
ca_bundle="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
port="${PORT:-8080}"
work="${root}/.cache/image"
# Outside /etc/ssl/certs: the Dockerfile installs ca-certificates, which rebuilds that bundle.
image_ca=/usr/local/share/host-ca-bundle.crt
ulimits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

log() { echo "image.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)

docker_works() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if docker_works; then
    engine=docker
else
    engine=podman
fi

# The container engine: docker, or podman (as root).
ctr() {
    if [[ $engine == docker ]]; then
        docker "$@"
    else
        "${as_root[@]}" podman "$@"
    fi
}

run_args() { # NAME MODEL_DIR
    local args=(--name "$1" -p "127.0.0.1:${port}:8080")
    if [[ $engine == podman ]]; then
        args+=(--runtime runc "${ulimits[@]}")
    fi
    if [[ -n $2 ]]; then
        [[ -d $2 ]] || die "no such model directory: $2"
        args+=(-v "$(cd "$2" && pwd):/opt/ml/model:ro")
    fi
    printf '%s\n' "${args[@]}"
}

setup() {
    if docker_works; then
        log "a Docker engine answers: nothing to install"
        return
    fi
    local missing=() tool
    for tool in buildah podman runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "no Docker engine: installing ${missing[*]} with apt-get"
        "${as_root[@]}" apt-get update -qq
        # runc, not crun: crun fails on cgroups v1/hybrid hosts
        DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
            buildah podman runc debootstrap >/dev/null
    fi
    log "buildah $(buildah --version | awk '{print $3}'), podman $(podman --version | awk '{print $3}')"
}

# The base: a minimal Debian with the host's CA bundle, imported as an image.
# Made once; made again when the host's bundle changes.
make_base() {
    [[ -r $ca_bundle ]] || die "no CA bundle at $ca_bundle (CA_BUNDLE)"
    local ca_sum
    ca_sum=$(sha256sum "$ca_bundle" | cut -c1-16)
    if [[ $(ctr image inspect --format '{{index .Config.Labels "host-ca"}}' "$base" 2>/dev/null || true) == "$ca_sum" ]]; then
        log "base $base is up to date"
        return
    fi
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: run $0 setup"
    local rootfs
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/whisper-base.XXXXXX")
    # shellcheck disable=SC2064 # expand now: rootfs is local
    trap "remove_rootfs '$rootfs'" EXIT
    log "debootstrap $suite into $rootfs (a minute or two)"
    "${as_root[@]}" debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }
    "${as_root[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
    "${as_root[@]}" cp "$ca_bundle" "$rootfs$image_ca"
    "${as_root[@]}" chroot "$rootfs" apt-get clean
    "${as_root[@]}" rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    "${as_root[@]}" tar -C "$rootfs" -c . | ctr import \
        --change "ENV PIP_CERT=$image_ca" \
        --change "LABEL host-ca=$ca_sum" \
        --change 'CMD ["/bin/bash"]' \
        - "$base" >/dev/null
    remove_rootfs "$rootfs"
    trap - EXIT
    log "base $base imported"
}

remove_rootfs() {
    local dir=$1 mount
    [[ -d $dir ]] || return 0
    # debootstrap mounts these while it works; never delete through a mount
    for mount in dev/pts dev proc sys; do
        if mountpoint -q "$dir/$mount" 2>/dev/null; then
            "${as_root[@]}" umount "$dir/$mount" || true
        fi
    done
    "${as_root[@]}" rm -rf --one-file-system "$dir"
}

# A PEP 503 simple index holding torch (CPU) and its dependencies, for Python $python_version.
make_torch_index() {
    local index=$1 python="${PYTHON:-}"
    if [[ -z $python ]]; then
        if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
    fi
    if [[ -f "$index/.complete-$torch_version" ]]; then
        log "torch index $index is ready"
        return
    fi
    rm -rf "$index"
    mkdir -p "$index/files"
    log "pip download torch==${torch_version}+cpu and its dependencies for Python $python_version"
    "$python" -m pip download -q --dest "$index/files" --only-binary=:all: \
        --python-version "$python_version" --implementation cp --platform manylinux_2_28_x86_64 \
        "torch==${torch_version}+cpu"
    "$python" - "$index" <<'EOF'
import html, pathlib, re, sys
index = pathlib.Path(sys.argv[1])
projects = {}
for f in sorted((index / "files").iterdir()):
    name = re.sub(r"[-_.]+", "-", f.name.split("-")[0]).lower()
    projects.setdefault(name, []).append(f.name)
root = index / "simple"
for name, files in projects.items():
    (root / name).mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="../../files/{html.escape(f)}">{html.escape(f)}</a><br>\n' for f in files)
    (root / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
(root / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "".join(
    f'<a href="{n}/">{n}</a><br>\n' for n in sorted(projects)) + "</body></html>\n")
EOF
    touch "$index/.complete-$torch_version"
}

build() {
    mkdir -p "$work"
    make_base
    local args=(--build-arg "CUDA_IMAGE=$base" --build-arg "TORCH_VERSION=$torch_version")
    local index_dir="$work/torch-index" server_pid=""
    if [[ -n ${TORCH_INDEX:-} ]]; then
        args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
    else
        make_torch_index "$index_dir"
        if [[ $engine == podman ]]; then
            args+=(-v "$index_dir:/torch-index:ro" --build-arg "TORCH_INDEX=file:///torch-index/simple")
        else
            # docker build cannot mount a host folder: serve the index on loopback and
            # build on the host's network (a fixed port keeps the layer cache valid).
            local index_port="${TORCH_INDEX_PORT:-18765}"
            python3 -m http.server --bind 127.0.0.1 --directory "$index_dir" "$index_port" >/dev/null 2>&1 &
            server_pid=$!
            # shellcheck disable=SC2064 # expand now: server_pid is local
            trap "kill $server_pid 2>/dev/null || true" EXIT
            args+=(--network host --build-arg "TORCH_INDEX=http://127.0.0.1:$index_port/simple")
        fi
    fi
    log "building $image with $engine"
    local start=$SECONDS
    if [[ $engine == docker ]]; then
        # COPY --chmod needs BuildKit
        DOCKER_BUILDKIT=1 docker build "${args[@]}" --tag "$image" "$root"
    else
        "${as_root[@]}" buildah build --layers --isolation chroot "${ulimits[@]}" "${args[@]}" \
            --tag "$image" "$root"
    fi
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        trap - EXIT
    fi
    log "built $image in $((SECONDS - start)) s"
    ctr image inspect --format '{{.Size}}' "$image" | awk '{printf "image.sh: size %.2f GB\n", $1 / 1e9}' >&2
}

command=${1:-}
shift || true
case "$command" in
    setup) setup ;;
    build) build ;;
    engine) echo "$engine" ;;
    labels) ctr image inspect --format '{{json .Config.Labels}}' "$IMAGE" ;;
    run)
        mapfile -t args < <(run_args "whisper-serve-$$" "${1:-}")
        log "serving $image on http://127.0.0.1:$port (Ctrl-C stops it)"
        # Ctrl-C reaches the engine's client, which passes the signal on; --rm leaves nothing behind
        ctr run --rm "${args[@]}" "$image" serve
        ;;
    start)
        [[ $# -ge 1 ]] || die "usage: $0 start NAME [MODEL_DIR]"
        mapfile -t args < <(run_args "$1" "${2:-}")
        ctr run -d "${args[@]}" "$image" serve >/dev/null
        ;;
    stop)
        [[ $# -eq 1 ]] || die "usage: $0 stop NAME"
        start=$(date +%s.%N)
        ctr stop --time 30 "$1" >/dev/null
        end=$(date +%s.%N)
        code=$(ctr inspect --format '{{.State.ExitCode}}' "$1")
        ctr rm "$1" >/dev/null
        echo "stopped $1 exit=$code seconds=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}')"
        ;;
    logs)
        [[ $# -eq 1 ]] || die "usage: $0 logs NAME"
        ctr logs "$1"
        ;;
    state)
        [[ $# -eq 1 ]] || die "usage: $0 state NAME"
        ctr inspect --format '{{.State.Status}}' "$1"
        ;;
    exec)
        [[ $# -ge 2 ]] || die "usage: $0 exec NAME COMMAND..."
        ctr exec "$@"
        ;;
    *)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
