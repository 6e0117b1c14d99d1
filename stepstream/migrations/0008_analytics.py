# Analytics' columns on step instances (stepstream/engine/analytics.py), filled from the log.

import django.db.models.deletion
from django.db import migrations, models

S = "stepstream_stepinstance"
I = "stepstream_flowinstance"  # noqa: E741
L = "stepstream_statechange"

# Per step instance (a log row's object_id): its first activation and first completion.
_FIRSTS = (
    f"SELECT object_id, MIN(CASE WHEN state = 'active' THEN occurred_at END) AS activated, "
    f"MIN(CASE WHEN state = 'completed' THEN occurred_at END) AS completed "
    f"FROM {L} WHERE entity = 'step' GROUP BY object_id"
)


def backfill(apps, schema_editor):
    """The new columns of existing step instances, from their instance and their log rows.

    A step instance's log rows say when it first became active and first
    completed; the seconds between them are what the engine now writes at the
    first completion. On SQLite, times are text ('YYYY-MM-DD HH:MM:SS[.ffffff]',
    as Django stores them): whole seconds through strftime and the fraction
    read from the text, since SQLite's date functions keep only milliseconds.
    """
    if schema_editor.connection.vendor == "postgresql":
        seconds = (
            "CASE WHEN x.activated IS NOT NULL AND x.completed IS NOT NULL THEN "
            "GREATEST(EXTRACT(EPOCH FROM x.completed - x.activated)::double precision, 0) END"
        )
        statements = [
            f"UPDATE {S} s SET flow_id = i.flow_id FROM {I} i WHERE i.id = s.instance_id",
            f"UPDATE {S} s SET activated_at = x.activated, seconds_to_complete = {seconds} "
            f"FROM ({_FIRSTS}) x WHERE s.id = x.object_id",
            # the updates queued checks of the deferred foreign keys; run them now, or
            # CREATE INDEX refuses a table with pending trigger events
            "SET CONSTRAINTS ALL IMMEDIATE",
        ]
    else:

        def epoch(column):
            return (
                f"(strftime('%s', {column}) + CAST('0' || substr({column}, 20) AS REAL))"
            )

        # MAX(0.0, NULL) is NULL: no completion (or no activation), no duration
        seconds = f"MAX(0.0, {epoch('x.completed')} - {epoch('x.activated')})"
        statements = [
            f"UPDATE {S} SET flow_id = i.flow_id FROM {I} i WHERE i.id = {S}.instance_id",
            f"UPDATE {S} SET activated_at = x.activated, seconds_to_complete = {seconds} "
            f"FROM ({_FIRSTS}) x WHERE {S}.id = x.object_id",
        ]
    with schema_editor.connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ('stepstream', '0007_installation'),
    ]

    # Nullable columns without defaults: SQLite adds them with ALTER TABLE (no table
    # rebuild, which would drop the dashboard's triggers on this table).
    operations = [
        migrations.AddField(
            model_name='stepinstance',
            name='activated_at',
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name='stepinstance',
            name='flow',
            field=models.ForeignKey(db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='stepstream.flow'),
        ),
        migrations.AddField(
            model_name='stepinstance',
            name='seconds_to_complete',
            field=models.FloatField(null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name='stepinstance',
            index=models.Index(condition=models.Q(('seconds_to_complete__isnull', False)), fields=['flow', 'identifier', 'seconds_to_complete'], name='step_completions'),
        ),
    ]
