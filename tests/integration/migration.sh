# tests/integration/migration.sh - live migration (issue 9), so far its
# foundation: a VM's KVM state (vCPUs, irqchip, PIT, kvmclock) captured
# from one VM, encoded, decoded and restored into a second VM that goes on
# running the guest from where the first stopped (build/tools/
# vmstate_selftest, plain and ASan/UBSan). Sourced by run.sh.

vmstate_selftest() { # binary
	"$1" >"$TMP/out" 2>&1 || RC=$?
	RC=${RC:-0}
	expect_rc 0 && grep -q '^vmstate selftest: ok' "$TMP/out" ||
		fail "output: $(tail -3 "$TMP/out")"
}

t_vmstate_selftest() { vmstate_selftest "$ROOT/build/tools/vmstate_selftest"; }
t_vmstate_selftest_asan() {
	vmstate_selftest "$ROOT/build/asan/tools/vmstate_selftest"
}
