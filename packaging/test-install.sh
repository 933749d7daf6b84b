#!/usr/bin/env bash
# Installs a tracerd .deb on this machine, checks what it set up, upgrades it, removes and purges
# it, and checks what is left. One PASS or FAIL line per point; exit status 1 on any FAIL.
#
#   sudo packaging/test-install.sh target/debian/tracerd_0.1.0-1_amd64.deb
#
# Needs root, dpkg and systemd's tools (systemd-analyze, systemd-sysusers, systemd-tmpfiles);
# systemd need not be PID 1 (containers, build boxes). Refuses to run when tracerd is already
# installed. Leaves the machine as it found it: the package is purged, and the user tracerd and
# /var/lib/tracerd are removed only if this script created them and the folder holds nothing
# but empty folders (the package itself never deletes them; see packaging/README.md).
# The bash -c '...' snippets below expand their variables when they run, not here.
# shellcheck disable=SC2016
set -euo pipefail

usage() { echo "usage: $0 PATH/TO/tracerd_VERSION_ARCH.deb" >&2; exit 2; }
[[ $# -eq 1 && -f $1 ]] || usage
DEB=$(realpath "$1")
[[ $EUID -eq 0 ]] || { echo "$0: must run as root (dpkg -i)" >&2; exit 2; }
if dpkg-query -W -f='${Status}' tracerd 2>/dev/null | grep -q 'installed\|config-files'; then
    echo "$0: tracerd is already installed here; this test would replace it. Purge it first." >&2
    exit 2
fi

CONFIG=/etc/tracerd/tracerd.toml
STATE=/var/lib/tracerd
UNIT_NAME=tracerd.service
TMP=$(mktemp -d /tmp/tracerd-test-install.XXXXXX)
LOG=$TMP/log
FAILURES=0
CHECKS=0
HAD_STATE=no; [[ -e $STATE ]] && HAD_STATE=yes
HAD_USER=no; getent passwd tracerd >/dev/null && HAD_USER=yes
HAD_GROUP=no; getent group tracerd >/dev/null && HAD_GROUP=yes
TEST_KEEP=$STATE/outbox/.test-install-keep-$$
DAEMON_PID=
LISTENER_PID=

pass() { CHECKS=$((CHECKS + 1)); echo "PASS $*"; }
fail() { CHECKS=$((CHECKS + 1)); FAILURES=$((FAILURES + 1)); echo "FAIL $*"; }
# check DESCRIPTION COMMAND...: PASS when the command succeeds; its output goes to the log and,
# on failure, to the terminal.
check() {
    local what=$1; shift
    if "$@" >"$TMP/out" 2>&1; then
        pass "$what"
    else
        fail "$what"
        sed 's/^/    | /' "$TMP/out"
    fi
    cat "$TMP/out" >>"$LOG"
}
# mode_is PATH "MODE USER GROUP"
mode_is() { [[ $(stat -c '%a %U %G' "$1") == "$2" ]] || { echo "$1: $(stat -c '%a %U %G' "$1"), want $2"; return 1; }; }
installed_status() { dpkg-query -W -f='${Status}' tracerd 2>/dev/null || true; }

cleanup() {
    local rc=$?
    set +e
    [[ -n $DAEMON_PID ]] && kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    [[ -n $LISTENER_PID ]] && kill "$LISTENER_PID" 2>/dev/null && wait "$LISTENER_PID" 2>/dev/null
    if [[ -n $(installed_status) && $(installed_status) != *not-installed* ]]; then
        dpkg --purge tracerd >>"$LOG" 2>&1
    fi
    rm -rf "$TEST_KEEP"
    if [[ $HAD_STATE == no && -d $STATE ]]; then
        if [[ -z $(find "$STATE" -mindepth 1 ! -type d -print -quit) ]]; then
            rm -rf "$STATE"
        else
            echo "note: $STATE holds files; left in place"
        fi
    fi
    if [[ $HAD_USER == no && ! -e $STATE ]] && getent passwd tracerd >/dev/null; then
        userdel tracerd >>"$LOG" 2>&1
    fi
    if [[ $HAD_GROUP == no && ! -e $STATE ]] && getent group tracerd >/dev/null; then
        groupdel tracerd >>"$LOG" 2>&1
    fi
    echo "log: $LOG"
    exit "$rc"
}
trap cleanup EXIT

echo "== tracerd package test: $DEB ($(du -h "$DEB" | cut -f1))"
dpkg-deb -f "$DEB" Package Version Architecture Depends | sed 's/^/   /'

# What the package ships, and which of those paths exist before it is installed (shared
# folders such as /usr/bin do; everything else must be gone again after the purge).
dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's#^\./#/#; s#/$##' | grep -v '^/\?$' | sort -u >"$TMP/payload"
while read -r p; do [[ -e $p ]] && echo "$p"; done <"$TMP/payload" >"$TMP/preexisting"

# --- install -----------------------------------------------------------------------------------
if dpkg -i "$DEB" </dev/null >"$TMP/out" 2>&1; then
    pass "dpkg -i installs"
else
    cat "$TMP/out"
    if apt-get install -f -y >>"$TMP/out" 2>&1 && [[ $(installed_status) == "install ok installed" ]]; then
        pass "dpkg -i installs (after apt-get install -f for dependencies)"
    else
        fail "dpkg -i installs"; exit 1
    fi
fi
cat "$TMP/out" >>"$LOG"
if grep -q 'enabled, but not started' "$TMP/out"; then
    pass "postinst prints the first-install note"
else
    fail "postinst prints the first-install note"
fi
check "package state is 'install ok installed'" test "$(installed_status)" = "install ok installed"

# --- user, folders -----------------------------------------------------------------------------
check "user tracerd exists (id tracerd)" id tracerd
check "user tracerd: home $STATE, shell nologin" \
    bash -c '[[ $(getent passwd tracerd | cut -d: -f6,7) == "'"$STATE"':/usr/sbin/nologin" ]]'
check "$STATE is 750 tracerd:tracerd" mode_is "$STATE" "750 tracerd tracerd"
check "$STATE/inbox is 2775 tracerd:tracerd" mode_is "$STATE/inbox" "2775 tracerd tracerd"
check "$STATE/work is 750 tracerd:tracerd" mode_is "$STATE/work" "750 tracerd tracerd"
for d in outbox failed archive; do
    check "$STATE/$d is 2770 tracerd:tracerd" mode_is "$STATE/$d" "2770 tracerd tracerd"
done
check "inbox has a default ACL" python3 -c 'import os,sys; os.getxattr(sys.argv[1], "system.posix_acl_default")' "$STATE/inbox"

# A group member with umask 022 drops a study folder; the daemon's user must be able to claim it
# by rename into work/ (moving a directory needs write permission on it).
DROP=.test-install-drop-$$
check "a group member (umask 022) drops a study into the inbox" \
    setpriv --reuid=nobody --regid=tracerd --clear-groups -- \
    sh -c "umask 022 && mkdir '$STATE/inbox/$DROP' && echo x > '$STATE/inbox/$DROP/SUV.nii.gz'"
check "tracerd can claim it: rename inbox/<study> -> work/<study>" \
    runuser -u tracerd -- mv "$STATE/inbox/$DROP" "$STATE/work/$DROP"
check "tracerd can read the dropped file" runuser -u tracerd -- cat "$STATE/work/$DROP/SUV.nii.gz"
rm -rf "${STATE:?}/inbox/$DROP" "${STATE:?}/work/$DROP"

# --- files -------------------------------------------------------------------------------------
check "/usr/bin/tracerd is executable" test -x /usr/bin/tracerd
check "tracerd --help shows the commands" bash -c '/usr/bin/tracerd --help | grep -q "check"'
if man -w tracerd >/dev/null 2>&1; then pass "man tracerd"; else echo "INFO no man page shipped (tracerd --help is the reference)"; fi
check "config $CONFIG is installed" test -f "$CONFIG"
check "$CONFIG is a dpkg conffile" bash -c "dpkg-query -W -f='\${Conffiles}' tracerd | grep -q ' $CONFIG '"
check "models: two cards and 8 ONNX files under /usr/share/tracerd/models" bash -c '
    [[ $(ls /usr/share/tracerd/models/*/model.toml | wc -l) == 2 ]] &&
    [[ $(ls /usr/share/tracerd/models/*/*.onnx | wc -l) == 8 ]]'
check "no training code or test vectors packaged" bash -c '! dpkg -L tracerd | grep -E "training|golden|\.py$"'
check "sysusers.d and tmpfiles.d snippets installed" \
    test -f /usr/lib/sysusers.d/tracerd.conf -a -f /usr/lib/tmpfiles.d/tracerd.conf
check "docs: README.md, docs/operations.md and result.schema.json" \
    test -f /usr/share/doc/tracerd/README.md -a -f /usr/share/doc/tracerd/docs/operations.md \
    -a -f /usr/share/doc/tracerd/result.schema.json
UNIT=$(dpkg -L tracerd | grep "/systemd/system/$UNIT_NAME\$" | head -1)
check "unit installed ($UNIT)" test -f "$UNIT"
check "systemd-analyze verify $UNIT: rc 0 and no output" bash -c \
    'out=$(systemd-analyze verify "$1" 2>&1); rc=$?; echo "$out"; [[ $rc == 0 && -z $out ]]' _ "$UNIT"
check "unit enabled (multi-user.target.wants symlink)" \
    test -L /etc/systemd/system/multi-user.target.wants/$UNIT_NAME

# --- tracerd check -----------------------------------------------------------------------------
# From / so that nothing relative to a source checkout can be picked up.
check "tracerd check --config $CONFIG passes (root)" \
    bash -c "cd / && /usr/bin/tracerd check --config $CONFIG"
check "check uses the packaged models" \
    bash -c "cd / && /usr/bin/tracerd check --config $CONFIG 2>/dev/null | grep -qx 'models = \"/usr/share/tracerd/models\"'"
check "runuser -u tracerd -- tracerd check --config $CONFIG passes" \
    bash -c "cd / && runuser -u tracerd -- /usr/bin/tracerd check --config $CONFIG"

# --- the daemon, outside systemd -----------------------------------------------------------------
# As the unit would run it: user tracerd, UMask 0007, a notify socket and a watchdog. A group
# member drops a synthetic study; it must be published, its files group-writable (the PACS
# router removes what it has sent), and SIGTERM must drain and exit 0. Only on a
# /var/lib/tracerd this script created: a site's inbox may hold real studies.
if ! /usr/bin/tracerd run --help >/dev/null 2>&1; then
    echo "INFO this tracerd has no 'run' command; daemon checks skipped"
elif [[ $HAD_STATE == yes ]]; then
    echo "INFO $STATE existed before this test; daemon checks skipped (its inbox may hold studies)"
else
    KEY=test-install-study-$$
    chmod 755 "$TMP"
    python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        log.write(s.recv(65536).decode(errors="replace").replace("\n", " ") + "\n")
' "$TMP/notify.sock" "$TMP/notify.log" &
    LISTENER_PID=$!
    for _ in $(seq 50); do [[ -S $TMP/notify.sock ]] && break; sleep 0.1; done
    bash -c 'umask 0007; cd /; exec "$@"' _ env NOTIFY_SOCKET="$TMP/notify.sock" WATCHDOG_USEC=20000000 \
        setpriv --reuid=tracerd --regid=tracerd --init-groups -- \
        /usr/bin/tracerd run --config "$CONFIG" >"$TMP/daemon.log" 2>&1 &
    DAEMON_PID=$!
    # wait_for SECONDS TEST...: polls the test once a second.
    wait_for() { local n=$1; shift; for _ in $(seq "$n"); do "$@" && return 0; sleep 1; done; "$@"; }
    check "tracerd run sends READY=1 (within 5 min)" wait_for 300 grep -q '^READY=1' "$TMP/notify.log"
    check "tracerd synth writes a small synthetic study" /usr/bin/tracerd synth --out "$TMP/synth" --seed 7
    check "a group member (umask 022) drops it into the inbox with a .complete marker" \
        setpriv --reuid=nobody --regid=tracerd --clear-groups -- sh -c "umask 022 &&
            mkdir '$STATE/inbox/$KEY' &&
            cp '$TMP/synth/SUV.nii.gz' '$TMP/synth/CT.nii.gz' '$STATE/inbox/$KEY/' &&
            touch '$STATE/inbox/$KEY/.complete'"
    check "the study is published: outbox/$KEY/result.json (within 10 min)" \
        wait_for 600 test -f "$STATE/outbox/$KEY/result.json"
    check "its inputs are archived: archive/$KEY, nothing left in the inbox" \
        wait_for 30 test -d "$STATE/archive/$KEY" -a ! -e "$STATE/inbox/$KEY"
    check "published files are group read/write (UMask 0007)" bash -c '
        bad=$(find "$1" ! -perm -g+rw); echo "$bad"; [[ -z $bad ]]' _ "$STATE/outbox/$KEY"
    check "WATCHDOG=1 pings arrive" grep -q '^WATCHDOG=1' "$TMP/notify.log"
    kill -TERM "$DAEMON_PID"
    rc=0; wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=
    check "SIGTERM: tracerd exits 0 (status $rc)" test "$rc" = 0
    check "SIGTERM: STOPPING=1 sent" grep -q 'STOPPING=1' "$TMP/notify.log"
    kill "$LISTENER_PID"; wait "$LISTENER_PID" 2>/dev/null || true; LISTENER_PID=
    cat "$TMP/notify.log" "$TMP/daemon.log" >>"$LOG"
    # Remove what the test created: its study and the daemon's own bookkeeping.
    rm -rf "${STATE:?}/outbox/$KEY" "${STATE:?}/archive/$KEY" "${STATE:?}/failed/$KEY" \
        "${STATE:?}/inbox/$KEY" "${STATE:?}/work/$KEY" "${STATE:?}/work/.tracerd-state"
fi

# --- reinstall and upgrade ---------------------------------------------------------------------
echo "# test-install marker $$" >>"$CONFIG"
runuser -u tracerd -- sh -c "echo result > '$TEST_KEEP'"
check "reinstall (dpkg -i the same .deb again, no prompt)" dpkg -i "$DEB" </dev/null
check "reinstall keeps the edited conffile" grep -q "test-install marker $$" "$CONFIG"
# An upgrade: the same payload repacked as the next Debian revision.
mkdir "$TMP/repack"
dpkg-deb -R "$DEB" "$TMP/repack/root"
VERSION=$(dpkg-deb -f "$DEB" Version)
sed -i "s/^Version: .*/Version: $VERSION+test1/" "$TMP/repack/root/DEBIAN/control"
dpkg-deb --root-owner-group -b "$TMP/repack/root" "$TMP/repack/tracerd-next.deb" >>"$LOG" 2>&1
check "upgrade to $VERSION+test1 (dpkg -i, no prompt)" dpkg -i "$TMP/repack/tracerd-next.deb" </dev/null
check "upgraded version is installed" \
    test "$(dpkg-query -W -f='${Version}' tracerd)" = "$VERSION+test1"
check "upgrade keeps the edited conffile" grep -q "test-install marker $$" "$CONFIG"
check "upgrade keeps folder modes (inbox 2775)" mode_is "$STATE/inbox" "2775 tracerd tracerd"
check "tracerd check passes after the upgrade" bash -c "cd / && /usr/bin/tracerd check --config $CONFIG"

# --- remove, purge -----------------------------------------------------------------------------
dpkg -L tracerd | grep -vx "/\." | sort >"$TMP/listed"
check "dpkg -r tracerd" dpkg -r tracerd
check "after remove: state 'deinstall ok config-files'" test "$(installed_status)" = "deinstall ok config-files"
check "after remove: /usr/bin/tracerd gone, $CONFIG kept" test ! -e /usr/bin/tracerd -a -f "$CONFIG"
check "dpkg --purge tracerd" dpkg --purge tracerd
check "after purge: dpkg no longer knows tracerd (dpkg -L fails)" bash -c '! dpkg -L tracerd'
check "after purge: every packaged path that was not there before is gone" bash -c '
    left=$(comm -23 <(sort -u "$1" "$2") "$3" | while read -r p; do [[ -e $p || -L $p ]] && echo "$p"; done)
    echo "$left"; [[ -z $left ]]' _ "$TMP/payload" "$TMP/listed" "$TMP/preexisting"
check "after purge: /etc/tracerd and /var/cache/tracerd gone" test ! -e /etc/tracerd -a ! -e /var/cache/tracerd
check "after purge: no unit symlinks or masks left in /etc/systemd" \
    bash -c '! find /etc/systemd -name "tracerd*" | grep .'
check "after purge: no deb-systemd-helper state left" \
    bash -c '! find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name "tracerd*" 2>/dev/null | grep .'
check "after purge: $STATE and its data survive" test -d "$STATE/inbox" -a -f "$TEST_KEEP"
check "after purge: user tracerd kept (Debian policy)" id tracerd

echo "== $CHECKS checks, $FAILURES failed"
if [[ $FAILURES -eq 0 ]]; then echo "ALL PASS"; else echo "FAILED"; exit 1; fi
