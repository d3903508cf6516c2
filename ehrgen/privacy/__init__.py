"""Privacy evaluation: patient vectors, exact blocked nearest neighbours, and attacks built on them."""
