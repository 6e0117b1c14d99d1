# On PostgreSQL, every statement that changes keys notifies the servers (stepstream/trust/keywatch.py).

from django.db import migrations

from stepstream.trust import keywatch


class Migration(migrations.Migration):
    dependencies = [("stepstream", "0008_analytics")]

    operations = [migrations.RunPython(keywatch.install, keywatch.uninstall)]
