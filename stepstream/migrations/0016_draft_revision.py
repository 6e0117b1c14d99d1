# Two people editing one draft (docs/dashboard.md, "Two people, one draft"): each save
# counts a revision, and a save naming one the draft has moved past is a 409; who saved
# last is named in that 409. Rows written before start at revision 1, saved by nobody.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('stepstream', '0014_step_last_activation'),
    ]

    operations = [
        migrations.AddField(
            model_name='flowdraft',
            name='revision',
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name='flowdraft',
            name='saved_by',
            field=models.CharField(blank=True, default='', max_length=255),
        ),
    ]
