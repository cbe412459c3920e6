#!/usr/bin/env bash
# Install the built wlmd_*.deb on this machine, check it as an admin would, then purge it.
#
#   packaging/test-deb.sh [wlmd_<version>_<arch>.deb]      (root; run by .ci/run after make deb)
#
# Checks: files in place with their owners and modes, /etc/wlmd/wlmd.conf a conffile, nothing
# enabled, `/usr/bin/wlmd --version`; the unit's ExecStart, run as user wlmd with the unit's one
# capability, answers DCMTK's findscu with the example worklist (on 127.0.0.1 and a free port,
# given after the unit's arguments); no file appears under /usr/lib/wlmd at run time; DCMTK's
# /usr/bin/findscu is untouched; `dpkg -P` leaves nothing behind but the worklists.
# systemd is not PID 1 here (containers, CI), so the unit itself is not started.
#
# It installs system-wide: while it runs, every wlmd on the machine started without --config
# reads /etc/wlmd/wlmd.conf. Run it on a CI machine or after the test suite, never alongside.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(ls wlmd_*.deb | head -n1)}
[ "$(id -u)" -eq 0 ] || { echo "test-deb: needs root" >&2; exit 2; }
if dpkg-query -W -f='${Status}' wlmd 2>/dev/null | grep -q installed || [ -e /etc/wlmd ]; then
    echo "test-deb: wlmd is installed (or /etc/wlmd exists) here; it would be purged" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive

failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

work=$(mktemp -d)
server_pid=""
user_existed=false
id wlmd >/dev/null 2>&1 && user_existed=true
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if dpkg-query -W -f='${Status}' wlmd 2>/dev/null | grep -q installed; then dpkg -P wlmd >/dev/null || true; fi
    rm -rf /var/lib/wlmd "$work"
    if ! $user_existed && id wlmd >/dev/null 2>&1; then userdel wlmd 2>/dev/null || true; groupdel wlmd 2>/dev/null || true; fi
}
trap cleanup EXIT

dcmtk_findscu_before=$(sha256sum /usr/bin/findscu 2>/dev/null || echo absent)

# --- install -------------------------------------------------------------------------------
apt-get install -y -qq "./$deb" >/dev/null
version=$(dpkg-query -W -f='${Version}' wlmd)
check "installed wlmd $version" test -n "$version"

check "user wlmd (sysusers)" bash -c "id -u wlmd >/dev/null"
check "/usr/bin/wlmd links into /usr/lib/wlmd" \
    test "$(readlink -f /usr/bin/wlmd)" = /usr/lib/wlmd/bin/wlmd
check "/usr/bin/wlmd-findscu links into /usr/lib/wlmd" \
    test "$(readlink -f /usr/bin/wlmd-findscu)" = /usr/lib/wlmd/bin/wlmd-findscu
check "/usr/bin/wlmctl links into /usr/lib/wlmd" \
    test "$(readlink -f /usr/bin/wlmctl)" = /usr/lib/wlmd/bin/wlmctl
check "no findscu from wlmd in /usr/bin" bash -c '! dpkg -L wlmd | grep -qx /usr/bin/findscu'
check "DCMTK's /usr/bin/findscu unchanged by install" \
    test "$(sha256sum /usr/bin/findscu 2>/dev/null || echo absent)" = "$dcmtk_findscu_before"
for path in /lib/systemd/system/wlmd.service /lib/systemd/system/wlmd.socket \
            /lib/systemd/system/wlmd-expire.service /lib/systemd/system/wlmd-expire.timer \
            /usr/share/man/man8/wlmctl.8.gz \
            /usr/lib/sysusers.d/wlmd.conf /usr/lib/tmpfiles.d/wlmd.conf \
            /usr/share/man/man8/wlmd.8.gz /usr/share/man/man5/wlmd.conf.5.gz \
            /usr/share/man/man1/wlmd-findscu.1.gz /etc/wlmd/wlmd.conf; do
    check "file $path" test -f "$path"
done
check "/etc/wlmd/wlmd.conf is a conffile" \
    bash -c "dpkg-query -W -f='\${Conffiles}' wlmd | grep -q ' /etc/wlmd/wlmd.conf '"
check "/var/lib/wlmd/worklists wlmd:wlmd 2770 (tmpfiles)" \
    test "$(stat -c '%U:%G %a' /var/lib/wlmd/worklists)" = "wlmd:wlmd 2770"
check "/var/cache/wlmd wlmd 700 (tmpfiles)" \
    test "$(stat -c '%U %a' /var/cache/wlmd)" = "wlmd 700"
check "nothing enabled" bash -c \
    '! ls /etc/systemd/system/*.wants/wlmd.* >/dev/null 2>&1'
check "/usr/bin/wlmd --version says $version" bash -c "/usr/bin/wlmd --version | grep -q 'v$version'"
check "wlmd --check-config accepts the shipped configuration" \
    setpriv --reuid=wlmd --regid=wlmd --init-groups /usr/bin/wlmd --check-config

# --- serve as the unit does ------------------------------------------------------------------
cp -r /usr/share/doc/wlmd/examples/worklists/. /var/lib/wlmd/worklists/
chown -R wlmd:wlmd /var/lib/wlmd/worklists
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/wlmd.service)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
read -r -a command <<<"$exec_start"
setpriv --reuid=wlmd --regid=wlmd --init-groups --inh-caps=+net_bind_service \
    --ambient-caps=+net_bind_service "${command[@]}" --listen-address 127.0.0.1 "$port" \
    2>$work/server.log &
server_pid=$!
answered=false
for _ in $(seq 1 60); do
    if findscu -to 5 -aec CT01 -k PatientName= -k 'ScheduledProcedureStepSequence[0].Modality=CT' \
        127.0.0.1 "$port" >$work/findscu.log 2>&1; then
        answered=true; break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.5
done
matches=$(grep -c "Find Response: .* (Pending)" $work/findscu.log || true)
check "ExecStart as wlmd answers DCMTK findscu (matches: $matches)" \
    bash -c "$answered && [ '$matches' -gt 0 ]"
check "ExecStart runs as user wlmd" test "$(ps -o user= -p "$server_pid")" = wlmd
check "the association is logged at the default level" \
    bash -c "sleep 0.5; grep -q 'association from 127.0.0.1' $work/server.log"
check "the worklist loads while serving, into the index file" bash -c \
    "for _ in \$(seq 1 100); do grep -q 'worklist loaded' $work/server.log && exit 0; sleep 0.1; done; exit 1"
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
check "index file written owner-only" \
    test "$(stat -c '%U %a' /var/cache/wlmd/index.sqlite 2>/dev/null)" = "wlmd 600"
check "no file under /usr/lib/wlmd that dpkg does not know" bash -c \
    'diff <(find /usr/lib/wlmd | sort) <(dpkg -L wlmd | grep "^/usr/lib/wlmd" | sort)'

# --- purge -----------------------------------------------------------------------------------
dpkg -P wlmd >/dev/null
check "package gone" bash -c "! dpkg-query -W -f='\${Status}' wlmd 2>/dev/null | grep -q installed"
for path in /usr/lib/wlmd /usr/bin/wlmd /usr/bin/wlmd-findscu /usr/bin/wlmctl /etc/wlmd \
            /var/cache/wlmd /lib/systemd/system/wlmd-expire.timer \
            /lib/systemd/system/wlmd.service /usr/lib/sysusers.d/wlmd.conf; do
    check "purged $path" test ! -e "$path"
done
check "worklists kept" test -f /var/lib/wlmd/worklists/CT01/lockfile
check "nothing else left in /var/lib/wlmd" test "$(ls -A /var/lib/wlmd)" = worklists
check "no systemd state left" bash -c '! ls /var/lib/systemd/deb-systemd-helper-enabled/wlmd.* >/dev/null 2>&1'
check "DCMTK's /usr/bin/findscu unchanged after purge" \
    test "$(sha256sum /usr/bin/findscu 2>/dev/null || echo absent)" = "$dcmtk_findscu_before"

# Without worklists, purge leaves nothing at all.
rm -rf /var/lib/wlmd
apt-get install -y -qq "./$deb" >/dev/null
dpkg -P wlmd >/dev/null
check "empty install purged without a trace" bash -c '! ls -d /var/lib/wlmd /var/cache/wlmd /etc/wlmd 2>/dev/null'

if [ "$failures" -ne 0 ]; then
    echo "test-deb: $failures check(s) failed; server log:" >&2
    cat $work/server.log >&2
    exit 1
fi
echo "test-deb: all checks passed"
