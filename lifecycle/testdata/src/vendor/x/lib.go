client.BooleanValue(ctx, "from-vendor", false, nil)
