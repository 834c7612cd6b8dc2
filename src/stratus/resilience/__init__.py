"""Pure reliability policies (retry budgets, outlier ejection, adaptive concurrency limits), with
injected time, shared by the request path and the simulator."""
