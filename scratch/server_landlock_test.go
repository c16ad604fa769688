package scratch

import "testing"

// TestAdminNeedsLandlock: a volume server keeps CAP_SYS_ADMIN (for
// passthrough) only where the kernel has Landlock; this kernel's answer is
// read as the server reads it.
func TestAdminNeedsLandlock(t *testing.T) {
	if err := adminNeedsLandlock(0); err == nil {
		t.Error("no Landlock (ABI 0): a server with CAP_SYS_ADMIN may start")
	}
	for _, abi := range []int{1, 7} {
		if err := adminNeedsLandlock(abi); err != nil {
			t.Errorf("Landlock ABI %d: %v", abi, err)
		}
	}
	abi, err := landlockABI()
	t.Logf("this kernel's Landlock ABI: %d (%v)", abi, err)
}
