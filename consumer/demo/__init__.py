"""Demo and test tooling, kept out of the runtime: nothing `rnnwatch run` imports lives here.

* :mod:`~rnnwatch.consumer.demo.broker` - an embedded Kafka-protocol broker (Tansu, from the ``[demo]`` extra)
  for `rnnwatch demo`, the test suites and the bench;
* :mod:`~rnnwatch.consumer.demo.feed` - the price-tick replayer behind `rnnwatch produce`, the demo's producer and
  the bench's feeds (bundled real prices, injected shocks, synthetic random walks).

A test pins that ``rnnwatch.consumer.service``'s import closure holds neither this package nor the CLI.
"""
