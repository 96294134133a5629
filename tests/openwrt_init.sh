#!/usr/bin/env bash
# tests/openwrt_init.sh: the OpenWrt package files, without an OpenWrt.
#
# openwrt/files/mixctl.init is sourced by BusyBox sh (OpenWrt's shell) next
# to stand-ins for rc.common, functions.sh (config_load reads a UCI file;
# config_get, config_get_bool) and procd.sh (procd_open_instance,
# procd_set_param, procd_append_param, procd_close_instance, ...) that record
# every call. Then start_service, service_triggers and check are run for a
# few /etc/config/mixctl settings and the recorded command line is checked.
# Also: the recipe openwrt/Makefile names what OpenWrt needs and agrees with
# the project's version and the init script's files.
set -u
. "$(dirname "$0")/lib.sh"
need busybox:busybox-static

INIT="$T_ROOT/openwrt/files/mixctl.init"
CONFIG="$T_ROOT/openwrt/files/mixctl.config"
RECIPE="$T_ROOT/openwrt/Makefile"
T_TMP=$(mktemp -d /tmp/mixctl-openwrt.XXXXXX)
trap cleanup EXIT

# ---- the stand-ins, in BusyBox sh ---------------------------------------------------------
cat >"$T_TMP/stubs.sh" <<'EOF'
# Every call goes to $CALLS, one line each, arguments in [brackets].
brackets() { out=""; for a in "$@"; do out="$out[$a] "; done; printf '%s' "${out% }"; }
record() { printf '%s\n' "$*" >>"$CALLS"; }

# functions.sh: config_load NAME parses $UCI_DIR/NAME into CONFIG_<section>_<option>.
config_load() {
	record "config_load $1"
	section=""
	while IFS= read -r line || [ -n "$line" ]; do
		set -- $line
		[ $# -ge 2 ] || continue
		case $1 in
		config)
			section=$(printf '%s' "${3:-$2}" | tr -d "'\"")
			;;
		option)
			key=$2
			value=${line#*$key}
			value=$(printf '%s' "$value" | sed "s/^[[:space:]]*//; s/^'\(.*\)'\$/\1/; s/^\"\(.*\)\"\$/\1/")
			eval "CONFIG_${section}_${key}=\$value"
			;;
		esac
	done <"$UCI_DIR/$1"
}
config_get() { # VAR SECTION OPTION [DEFAULT]
	eval "$1=\${CONFIG_${2}_${3}:-\$4}"
}
config_get_bool() { # VAR SECTION OPTION [DEFAULT]
	eval "_v=\${CONFIG_${2}_${3}:-\$4}"
	case $_v in
	1|on|true|yes|enabled) _v=1 ;;
	0|off|false|no|disabled) _v=0 ;;
	*) _v=$4 ;;
	esac
	eval "$1=\$_v"
}
# rc.common
extra_command() { record "extra_command $(brackets "$@")"; }
# procd.sh
procd_open_instance() { record "open_instance"; COMMAND=""; }
procd_set_param() {
	record "set $(brackets "$@")"
	if [ "$1" = command ]; then shift; COMMAND=$(brackets "$@"); fi
}
procd_append_param() {
	record "append $(brackets "$@")"
	if [ "$1" = command ]; then shift; COMMAND="$COMMAND $(brackets "$@")"; fi
}
procd_close_instance() { record "close_instance"; record "command $COMMAND"; }
procd_add_reload_trigger() { record "reload_trigger $(brackets "$@")"; }
EOF

# scenario NAME [UCI-FILE]: sources the init script with the stand-ins in
# BusyBox sh and runs start_service, service_triggers and check; the calls
# land in $T_TMP/NAME.calls.
scenario() {
    name=$1
    mkdir -p "$T_TMP/$name"
    cp "${2:-$CONFIG}" "$T_TMP/$name/mixctl"
    # mixctl itself: a stand-in that records its arguments and fails when
    # MIXCTL_STATUS says so.
    printf '#!/bin/sh\necho "mixctl $*" >>"%s"\nexit ${MIXCTL_STATUS:-0}\n' "$T_TMP/$name.calls" >"$T_TMP/$name/mixctl.bin"
    chmod 755 "$T_TMP/$name/mixctl.bin"
    CALLS="$T_TMP/$name.calls" UCI_DIR="$T_TMP/$name" MIXCTL_STATUS="${STATUS:-0}" \
        timeout 20 busybox sh -c '
            . "$1"; . "$2"
            start_service; echo "start_service returned $?" >>"$CALLS"
            service_triggers
            PROG="$3"
            check; echo "check returned $?" >>"$CALLS"
        ' sh "$T_TMP/stubs.sh" "$INIT" "$T_TMP/$name/mixctl.bin" >"$T_TMP/$name.out" 2>&1
    echo "busybox sh exited $?" >>"$T_TMP/$name.calls"
}
has() { grep -qxF -- "$2" "$T_TMP/$1.calls"; }
lacks() { ! grep -q -- "$2" "$T_TMP/$1.calls"; }
show_calls() { sed "s/^/  $1: /" "$T_TMP/$1.calls"; }

uci() { # uci NAME option-lines...: a /etc/config/mixctl
    {
        echo "config mixctl 'main'"
        shift
        for o in "$@"; do printf '\toption %s\n' "$o"; done
    } >"$T_TMP/$1.uci"
}

# ---- the script itself ------------------------------------------------------------------------
check "busybox sh -n accepts mixctl.init" busybox sh -n "$INIT"
check "mixctl.init runs under /etc/rc.common" sh -c 'head -n 1 "$1" | grep -qx "#!/bin/sh /etc/rc.common"' _ "$INIT"
check "USE_PROCD=1" grep -qx "USE_PROCD=1" "$INIT"
check "START=95" grep -qx "START=95" "$INIT"

# ---- the shipped defaults: enabled 0, so no instance ---------------------------------------------
scenario shipped
check "shipped config: config_load mixctl" has shipped "config_load mixctl"
check "shipped config (enabled '0'): no procd instance" lacks shipped "open_instance"
check "shipped config: start_service returns 0" has shipped "start_service returned 0"
check "extra_command check is declared" grep -q '^extra_command \[check\]' "$T_TMP/shipped.calls"
check "check runs mixctl -check on the default rules file" has shipped "mixctl -check -f /etc/mixctl/rules.yaml"

# ---- every option set ---------------------------------------------------------------------------------
uci full "enabled '1'" "config_file '/etc/mixctl/custom.yaml'" "workers '2'" "verbose '0'" "dial_timeout '3s'"
scenario full "$T_TMP/full.uci"
check "full config: one instance" test "$(grep -c '^open_instance$' "$T_TMP/full.calls")" = 1
check "full config: the command line" has full \
    "command [/usr/bin/mixctl] [-f] [/etc/mixctl/custom.yaml] [-w] [2] [-v=false] [-t] [3s]" ||
    show_calls full
check "full config: respawn" grep -q '^set \[respawn\]' "$T_TMP/full.calls"
check "full config: stdout 1" has full "set [stdout] [1]"
check "full config: limits nofile 65536" has full "set [limits] [nofile=65536 65536]"
check "full config: stderr 1" has full "set [stderr] [1]"
check "full config: file is the rules file" has full "set [file] [/etc/mixctl/custom.yaml]"
check "full config: reload_signal HUP" has full "set [reload_signal] [HUP]"
check "full config: reload trigger on config mixctl" has full "reload_trigger [mixctl]"
check "full config: check uses config_file" has full "mixctl -check -f /etc/mixctl/custom.yaml"

# ---- enabled only: defaults for the rest ------------------------------------------------------------
uci minimal "enabled 1"
scenario minimal "$T_TMP/minimal.uci"
check "enabled only: -f default, -v=true, -t 1.5s, no -w" has minimal \
    "command [/usr/bin/mixctl] [-f] [/etc/mixctl/rules.yaml] [-v=true] [-t] [1.5s]" || show_calls minimal

# ---- UCI bool spellings ----------------------------------------------------------------------------------
uci yes "enabled 'yes'" "verbose 'off'" "workers '4'"
scenario yes "$T_TMP/yes.uci"
check "enabled 'yes', verbose 'off': -v=false, -w 4" has yes \
    "command [/usr/bin/mixctl] [-f] [/etc/mixctl/rules.yaml] [-w] [4] [-v=false] [-t] [1.5s]" || show_calls yes
uci off "enabled 'false'" "workers '4'"
scenario off "$T_TMP/off.uci"
check "enabled 'false': no instance" lacks off "open_instance"

# ---- check passes mixctl's failure on ---------------------------------------------------------------
STATUS=1 scenario failing "$T_TMP/full.uci"
check "check returns mixctl -check's status 1" has failing "check returned 1"

# ---- the recorded command line is one mixctl accepts -------------------------------------------------
BIN=""
for candidate in "$T_ROOT/build/static/mixctl" "$T_ROOT/mixctl"; do
    if [ -x "$candidate" ] && "$candidate" -V >/dev/null 2>&1; then BIN=$candidate && break; fi
done
if [ -n "$BIN" ]; then
    printf 'rules:\n- from: 127.0.0.1:0\n  to: 127.0.0.1:9\n' >"$T_TMP/custom.yaml"
    out=$(timeout 20 "$BIN" -check -f "$T_TMP/custom.yaml" -w 2 -v=false -t 3s 2>&1)
    check "$BIN takes the flags the init script passes (-check -f ... -w 2 -v=false -t 3s): $out" \
        test "$out" = "configuration OK"
else
    echo "note: no built mixctl found; the flags were not run through it"
fi

# ---- the recipe ---------------------------------------------------------------------------------------
version=$(makefile_version)
for line in "PKG_NAME:=mixctl" "PKG_VERSION:=$version" "PKG_LICENSE:=MIT" "  SECTION:=net" "  CATEGORY:=Network" \
    "define Package/mixctl" "define Package/mixctl/conffiles" "/etc/mixctl/rules.yaml" "/etc/config/mixctl" \
    '$(eval $(call BuildPackage,mixctl))'; do
    check "openwrt/Makefile has: $line" grep -qxF -- "$line" "$RECIPE"
done
check "openwrt/Makefile has PKG_RELEASE" grep -q "^PKG_RELEASE:=[0-9]" "$RECIPE"
check "binary and init script installed with \$(INSTALL_BIN)" sh -c \
    'grep -q "INSTALL_BIN) \$(PKG_BUILD_DIR)/mixctl \$(1)/usr/bin/mixctl" "$1" &&
     grep -q "INSTALL_BIN) ./files/mixctl.init \$(1)/etc/init.d/mixctl" "$1"' _ "$RECIPE"
check "the conffiles are the files installed" sh -c \
    'grep -q "INSTALL_CONF) ./files/mixctl.config \$(1)/etc/config/mixctl" "$1" &&
     grep -q "INSTALL_CONF) .*rules.example.yaml \$(1)/etc/mixctl/rules.yaml" "$1"' _ "$RECIPE"
check "Build/Compile uses the project Makefile with the SDK's CXX" \
    grep -q 'CXX="$(TARGET_CXX)"' "$RECIPE"
check "the init script's default rules file is the conffile" \
    grep -q "config_file main config_file /etc/mixctl/rules.yaml" "$INIT"

finish
