# Content (docs/content.md): a step's content, an environment's theme, and which
# steps' content was shown (or its target missing) in which instance.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('stepstream', '0010_login_throttle'),
    ]

    operations = [
        migrations.AddField(
            model_name='step',
            name='content',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='environment',
            name='theme',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.CreateModel(
            name='ContentSeen',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('identifier', models.CharField(max_length=255)),
                ('kind', models.CharField(choices=[('shown', 'shown'), ('target_missing', 'target_missing')], max_length=16)),
                ('flow', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='stepstream.flow')),
                ('instance', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='stepstream.flowinstance')),
            ],
            options={
                'indexes': [models.Index(fields=['flow', 'identifier', 'kind'], name='content_seen_by_step')],
                'constraints': [models.UniqueConstraint(fields=('instance', 'identifier', 'kind'), name='content_seen_once')],
            },
        ),
    ]
