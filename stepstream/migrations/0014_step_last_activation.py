# Orchestration's gaps (docs/rules.md, "Timers"): a step's latest activation, so a timer
# written again when its instance resumes counts `after` from it (a manual cycle
# reactivates a step; activated_at keeps the first, for analytics). Null for rows
# written before: the engine then reads activated_at.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('stepstream', '0013_orchestration'),
    ]

    operations = [
        migrations.AddField(
            model_name='stepinstance',
            name='last_activated_at',
            field=models.DateTimeField(null=True),
        ),
    ]
