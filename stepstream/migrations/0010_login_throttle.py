# Failed dashboard sign-ins in a row per username and per client address
# (stepstream/http/dashboard/throttle.py).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('stepstream', '0009_key_changes_notify'),
    ]

    operations = [
        migrations.CreateModel(
            name='LoginThrottle',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=80, unique=True)),
                ('failures', models.IntegerField(default=0)),
                ('last_at', models.DateTimeField()),
                ('locked_until', models.DateTimeField(null=True)),
            ],
            options={
                'indexes': [models.Index(fields=['last_at', 'id'], name='login_throttle_last_at')],
            },
        ),
    ]
