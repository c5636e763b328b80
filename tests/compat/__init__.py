"""Ray Data compatibility: one module per area (transforms, consumption, iterators and
splits, reads, writes, tensors, formats), each case written from Ray Data's documented
behaviour with only the import changed."""
