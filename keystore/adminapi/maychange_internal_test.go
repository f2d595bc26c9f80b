package adminapi

import "testing"

// TestMayChange: MayChange is the permission table's answer for every
// route that changes keys without deleting or importing them.
func TestMayChange(t *testing.T) {
	want := map[Role]bool{RoleAdmin: true, RoleManage: true, RoleRead: false, RoleVerify: false, Role("nobody"): false}
	for role, w := range want {
		if got := role.MayChange(); got != w {
			t.Errorf("%s.MayChange() = %v, want %v", role, got, w)
		}
		for label, need := range routePermissions {
			if need == permChange && role.may(label) != role.MayChange() {
				t.Errorf("%s may %s: %v, MayChange %v", role, label, role.may(label), role.MayChange())
			}
		}
	}
}
