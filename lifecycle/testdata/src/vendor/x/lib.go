package x

func f() {
	client.BooleanValue(ctx, "from-vendor", false, nil)
}
