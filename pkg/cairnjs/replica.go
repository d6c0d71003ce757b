package cairnjs

// ReplicaKey is the key under which coordinator replica id announces itself in
// CAIRN_LEASES ("*" for all).
func ReplicaKey(id string) string { return "coordinator." + id }
