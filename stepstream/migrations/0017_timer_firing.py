# On PostgreSQL, every statement that writes a timer notifies the servers' firing loops
# (stepstream/engine/firing.py), which sleep until the next due time instead of polling.

from django.db import migrations

from stepstream.engine import firing


class Migration(migrations.Migration):
    dependencies = [("stepstream", "0016_draft_revision")]

    operations = [migrations.RunPython(firing.install, firing.uninstall)]
