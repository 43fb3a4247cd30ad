#!/usr/bin/env bash
# The README's first command (via `make demo`): start the server on the embedded
# tiny.en at http://127.0.0.1:8080, speak a sample with espeak-ng, transcribe it
# through /invocations, and leave the server running.
#
#   local_test/demo.sh          start (or reuse) the server and transcribe the sample
#   local_test/demo.sh stop     stop the server this script started (`make stop`)
#
# The server runs in a process group of its own, recorded in .cache/demo/server.pid
# (with its start time, so a recycled pid is never mistaken for it); `stop` sends
# that group SIGTERM, as SageMaker does, and nothing else. A server that was
# already answering on the port is used and never stopped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
port="${PORT:-8080}"
export PORT="$port"
mkdir -p .cache/demo
log=.cache/demo/server.log
pidfile=.cache/demo/server.pid

# The start time of a process (clock ticks since boot): with its pid, it names one process.
start_time() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    read -ra fields <<<"${stat##*) }" # fields from the 3rd on; the command name may hold spaces
    echo "${fields[19]}"
}

# The pid from the pid file when that process is still the one we started, else nothing.
our_server() {
    local pid started
    [[ -f $pidfile ]] || return 1
    read -r pid started <"$pidfile"
    [[ -n $pid && $(start_time "$pid" || true) == "$started" ]] || return 1
    echo "$pid"
}

stop() {
    local pid
    if ! pid=$(our_server); then
        rm -f "$pidfile"
        echo "no demo server of ours is running"
        return 0
    fi
    echo "stopping the demo server (process group $pid)"
    kill -TERM -- "-$pid"
    # gunicorn lets requests in flight finish for up to 30 s
    for _ in $(seq 1 70); do
        [[ $(start_time "$pid" || true) == "" ]] && break
        sleep 0.5
    done
    if [[ $(start_time "$pid" || true) != "" ]]; then
        echo "still running after 35 s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "stopped"
}

case "${1:-start}" in
    stop)
        stop
        exit 0
        ;;
    start) ;;
    *)
        echo "usage: $0 [start|stop]" >&2
        exit 2
        ;;
esac

if curl -fsS "http://127.0.0.1:${port}/ping" >/dev/null 2>&1; then
    if our_server >/dev/null; then
        echo "the demo server already answers on port ${port}: using it"
    else
        echo "a server already answers on port ${port}: using it (not started here, so make stop leaves it alone)"
    fi
else
    # setsid: the server leads a process group of its own (its pid is the group's id),
    # so stop reaches it and its workers, and nothing else.
    setsid nohup local_test/serve_local.sh >"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid $(start_time "$pid")" >"$pidfile"
    echo "server starting (pid $pid, log $log)"
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:${port}/ping" >/dev/null 2>&1 && break
        our_server >/dev/null || break # it died
        sleep 1
    done
    if ! curl -fsS "http://127.0.0.1:${port}/ping" >/dev/null 2>&1; then
        tail -n 30 "$log"
        stop
        exit 1
    fi
fi

sample=.cache/demo/sample.mp3
espeak-ng -v en-us -w .cache/demo/sample.wav \
    "Welcome to Whisper on SageMaker. This sample was spoken by a machine and transcribed by the server."
ffmpeg -y -loglevel error -i .cache/demo/sample.wav "$sample"

echo "--- POST /invocations (audio/mpeg, Accept: application/json)"
local_test/predict.sh "$sample" audio/mpeg application/json
echo
echo "--- the same, Accept: text/vtt"
local_test/predict.sh "$sample" audio/mpeg text/vtt
if our_server >/dev/null; then
    echo "--- the server keeps running on http://127.0.0.1:${port}; stop it with: make stop"
fi
