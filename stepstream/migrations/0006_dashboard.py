# The dashboard's counters (stepstream/engine/counters.py): two tables kept by triggers.

import django.db.models.deletion
from django.db import migrations, models

from stepstream.engine import counters


class Migration(migrations.Migration):

    dependencies = [
        ('stepstream', '0005_outbound'),
    ]

    operations = [
        migrations.CreateModel(
            name='StepCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('identifier', models.CharField(max_length=255)),
                ('shard', models.SmallIntegerField()),
                ('n_inactive', models.BigIntegerField(default=0)),
                ('n_active', models.BigIntegerField(default=0)),
                ('n_completed', models.BigIntegerField(default=0)),
                ('n_exited', models.BigIntegerField(default=0)),
                ('flow', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='stepstream.flow')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('flow', 'identifier', 'shard'), name='step_count_unique')],
            },
        ),
        migrations.CreateModel(
            name='StepDuration',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('identifier', models.CharField(max_length=255)),
                ('bucket', models.SmallIntegerField()),
                ('shard', models.SmallIntegerField()),
                ('n', models.BigIntegerField(default=0)),
                ('flow', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='stepstream.flow')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('flow', 'identifier', 'bucket', 'shard'), name='step_duration_unique')],
            },
        ),
        migrations.RunPython(counters.install, counters.uninstall),
    ]
