package main

func run(ctx context.Context, client *openfeature.Client) {
	on, _ := client.BooleanValue(ctx, "checkout-v2", false, openfeature.EvaluationContext{})
	n, _ := client.IntValueDetails(context.Background(), "max-items", 10, evalCtx)
	_ = wrapperspb.StringValue("not-a-flag")
}
