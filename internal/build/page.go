package build

// PageOf returns the items of list from offset, at most limit of them
// (limit <= 0: all the rest); none when offset is past the end.
func PageOf[T any](list []T, offset, limit int) []T {
	if offset >= len(list) {
		return nil
	}
	list = list[offset:]
	if limit > 0 && limit < len(list) {
		list = list[:limit]
	}
	return list
}
