# Authoring (docs/dashboard.md): who published each version and its content hash,
# drafts, a flow's switches (enabled, window, archived) and the audit.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('stepstream', '0011_content'),
    ]

    operations = [
        migrations.AddField(
            model_name='flow',
            name='published_by',
            field=models.CharField(blank=True, default='', max_length=160),
        ),
        migrations.AddField(
            model_name='flow',
            name='hash',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.CreateModel(
            name='FlowDraft',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('identifier', models.CharField(max_length=255)),
                ('body', models.JSONField(default=dict)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('environment', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='drafts', to='stepstream.environment')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('environment', 'identifier'), name='draft_unique')],
            },
        ),
        migrations.CreateModel(
            name='FlowSwitch',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('identifier', models.CharField(max_length=255)),
                ('enabled', models.BooleanField(default=True)),
                ('starts_at', models.DateTimeField(blank=True, null=True)),
                ('ends_at', models.DateTimeField(blank=True, null=True)),
                ('archived', models.BooleanField(default=False)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('environment', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='stepstream.environment')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('environment', 'identifier'), name='switch_unique')],
            },
        ),
        migrations.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField()),
                ('actor', models.CharField(max_length=160)),
                ('action', models.CharField(max_length=40)),
                ('object', models.CharField(max_length=300)),
                ('details', models.JSONField(blank=True, default=dict)),
                ('environment', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='stepstream.environment')),
            ],
            options={
                'indexes': [models.Index(fields=['environment', 'id'], name='audit_by_env')],
            },
        ),
    ]
