from openfeature import api

client = api.get_client()
if client.get_boolean_value("legacy-export", False):
    pass
limit = client.get_integer_value(flag_key="max-items", default_value=3)
