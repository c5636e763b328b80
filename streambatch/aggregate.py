"""The aggregate functions under the module name Ray Data gives them, so that
``from ray.data.aggregate import Sum`` ports as ``from streambatch.aggregate import Sum``.

>>> import streambatch as sb
>>> from streambatch.aggregate import Count, Sum
>>> sb.range(4).aggregate(Count(), Sum("id"))
{'count()': 4, 'sum(id)': 6}
"""

from streambatch.operators.aggregates import AggregateFn, Count, Max, Mean, Min, Std, Sum

__all__ = ["AggregateFn", "Count", "Max", "Mean", "Min", "Std", "Sum"]
